"""encoderkit.objectives"""
