"""callbridge.crm.bitrix24"""
