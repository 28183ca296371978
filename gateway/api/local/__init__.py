"""The local API: the users' face (operators, signatories, admins, auditors)."""
