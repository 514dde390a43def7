"""callbridge.rules"""
