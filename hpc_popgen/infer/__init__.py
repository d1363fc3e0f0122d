"""Selection inference from a trained network: posterior summaries, HPDI, Bayes factors, genome scans."""
