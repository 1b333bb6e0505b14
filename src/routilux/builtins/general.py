"""placeholder"""
ROUTINES: list = []
