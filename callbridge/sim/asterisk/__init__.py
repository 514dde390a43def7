"""callbridge.sim.asterisk"""
