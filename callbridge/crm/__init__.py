"""callbridge.crm"""
