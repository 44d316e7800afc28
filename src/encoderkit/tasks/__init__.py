"""encoderkit.tasks"""
