"""callbridge.sim"""
