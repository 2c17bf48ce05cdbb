"""The generative study: latent diffusion over frozen JEPA / MAE patch embeddings, then sample-quality metrics.

A frozen encoder turns images into patch tokens, a small VAE and a latent diffusion model learn their
distribution, a decoder maps samples back to images, and the metrics here (Frechet distance, Inception-style
score, k-NN precision / recall, class-histogram distance, memorisation) compare generated and real features of
a named feature network. ``study`` runs it all, resumably, for several runs (``pjepa gen study``). Nothing in
this package imports ``pjepa.train`` (docs/design.md).
"""
