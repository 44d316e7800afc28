"""encoderkit.nn"""
