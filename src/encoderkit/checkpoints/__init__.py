"""encoderkit.checkpoints"""
