"""encoderkit.models"""
