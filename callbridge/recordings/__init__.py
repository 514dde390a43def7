"""callbridge.recordings"""
