"""Messages: sending, receiving, reading, delivery, uploads, the delivery stream."""
