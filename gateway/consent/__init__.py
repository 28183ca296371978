"""Consent-gated forwarding (art. 7.3): consent, revocation, re-marking, forwards."""
