"""callbridge.sim.bitrix24"""
