"""What a person sees in the terminal: progress bars, the results table, quieting library bars.
"""
