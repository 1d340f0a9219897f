"""The ground floor: errors and exit codes, input limits, shared options, atomic writes, reading a
user's files, JSON values, versions, YAML with lines, stop signals, crash files, video files.
"""
