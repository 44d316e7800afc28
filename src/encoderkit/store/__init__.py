"""encoderkit.store"""
