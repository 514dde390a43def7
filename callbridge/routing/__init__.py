"""callbridge.routing"""
