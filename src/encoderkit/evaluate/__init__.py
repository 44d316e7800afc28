"""encoderkit.evaluate"""
