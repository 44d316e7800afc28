"""encoderkit.serve"""
