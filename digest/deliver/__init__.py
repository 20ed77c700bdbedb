"""Stage 6: batches of recipients → messages handed over, exactly once.

``dispatch`` drives batches from several workers, committing each one's sending to the
ledger before the request; the backends (``outbox``, ``smtp``, ``sendgrid``) share the
interface in ``base``; ``message`` builds one RFC 5322 message.
"""
