"""From judgment records to numbers: the paper's metric (win rates, dPQ, intervals, judge
health) and the majority vote of several judges.
"""
