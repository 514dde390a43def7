"""callbridge.pbx"""
