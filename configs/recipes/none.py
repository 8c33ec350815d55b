# Baseline: the student alone (no teacher is loaded, no edge).
edges = []
