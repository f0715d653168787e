"""Data sources and splits: MNIST bundled / IDX / paddle's downloader (mnist.py), the dataset with
its seeded splits and normalisation (dataset.py). The bundled digits and their PROVENANCE.md live here."""
