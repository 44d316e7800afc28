"""encoderkit.train"""
