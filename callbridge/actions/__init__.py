"""callbridge.actions"""
