"""callbridge.pbx.tracker"""
