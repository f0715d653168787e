"""Data sources and splits: MNIST bundled / IDX / paddle's downloader (mnist.py), image folders and
.npz pixels (images.py), the dataset with its seeded splits and input contract (dataset.py), the
loader that picks the source (load.py), training augmentation (augment.py) and camera-like frames
made from the bundled digits (frames.py). The bundled digits and their PROVENANCE.md live here."""
