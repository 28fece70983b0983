"""BoLT (Ruan et al. 2025): latent thoughts as latent variables of the text, inferred by the model
itself. estep.py samples and importance-weights thoughts (E-step) into thought-record shards that
the pipeline's `thoughts` source trains on (M-step); em.py alternates the two."""
