"""The paper's figures and the HTML report of a run or a sweep (paper, section 5)."""
