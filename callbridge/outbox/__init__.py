"""callbridge.outbox"""
