"""callbridge.web"""
