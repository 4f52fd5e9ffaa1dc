"""The catalogue of built-in data sets: where their files come from and what their bytes must hash to.

A data set can be stored in more than one layout (the mirror keeps MNIST as IDX
files, the online source as one .npz); each layout lists its files and the
sha256 of every copy known to be good (Debian re-packs Fashion-MNIST's gzip
files, so their bytes differ from the official ones although the images agree).
A layout whose archive is too large to keep names the file its cut goes into.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layout:
    """One way a data set's files are stored, and how to read them."""

    format: str  # "idx-gz" | "mnist-npz" | "image-zip" | "cifar-python" | "petimages-zip"
    files: dict[str, frozenset[str]]  # file name -> accepted sha256 digests
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> bytes where published, checked first
    # An archive too large to keep whole: the raw folder holds this file, a subset cut from it, instead.
    cut: str | None = None

    @property
    def kept(self) -> tuple[str, ...]:
        """The files this layout leaves in a data set's raw folder."""
        return (self.cut,) if self.cut else tuple(self.files)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # height, width, channels after preprocessing
    layouts: tuple[Layout, ...]
    mirror_dir: str  # folder name inside the local mirror
    online_base: str | None = None  # canonical download folder (None: no public source)
    online_layout: int = 0  # index into layouts of what online_base serves
    debian: bool = False  # shipped by Debian's dataset-fashion-mnist package
    has_validation_split: bool = False  # the archive ships its own validation split
    binary: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def online(self) -> Layout | None:
        return self.layouts[self.online_layout] if self.online_base else None


def _digests(*hexes: str) -> frozenset[str]:
    return frozenset(hexes)


IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    image_shape=(28, 28, 1),
    layouts=(
        Layout(
            "idx-gz",
            {
                # official release (zalandoresearch) and Debian's dataset-fashion-mnist re-pack
                IDX_NAMES[0]: _digests(
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                ),
                IDX_NAMES[1]: _digests(
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                ),
                IDX_NAMES[2]: _digests(
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                ),
                IDX_NAMES[3]: _digests(
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                ),
            },
        ),
    ),
    mirror_dir="fashion_mnist",
    online_base="https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    debian=True,
)

MNIST = DatasetSpec(
    name="mnist",
    classes=tuple(str(d) for d in range(10)),
    image_shape=(28, 28, 1),
    layouts=(
        Layout(
            "idx-gz",
            {
                IDX_NAMES[0]: _digests("db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19"),
                IDX_NAMES[1]: _digests("51fc562b6747b666fbf6e84ce29d43c3cb5f9c388c664d43b33f02095313405a"),
                IDX_NAMES[2]: _digests("cfeddb84311ecf044fc6a5b0f6ee8a24d265d4e83e388400186eb114082f4209"),
                IDX_NAMES[3]: _digests("e41c74e484045d39b462a7790a4af51301bd9b0b24f0154798d713ec68c45920"),
            },
        ),
        Layout(
            "mnist-npz",
            {"mnist.npz": _digests("731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")},
        ),
    ),
    mirror_dir="mnist",
    online_base="https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    online_layout=1,
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    image_shape=(32, 32, 3),
    layouts=(
        Layout(
            "image-zip",
            {"cifar10-jpeg.zip": _digests("24bc63ed2e81dfe8fd4829f778321cb55eff46eb3ade2896aaf76d1977fcd851")},
        ),
        Layout(
            "cifar-python",
            {"cifar-10-python.tar.gz": _digests("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")},
        ),
    ),
    mirror_dir="cifar10",
    online_base="https://www.cs.toronto.edu/~kriz/",
    online_layout=1,
)

PETIMAGES_ZIP = "kagglecatsanddogs_5340.zip"

CATS_VS_DOGS = DatasetSpec(
    name="cats_vs_dogs",
    classes=("cats", "dogs"),
    image_shape=(150, 150, 3),
    layouts=(
        # The mirror's copy: the book's subset of Kaggle's competition archive, 200x200 JPEGs.
        Layout(
            "image-zip",
            {"cats_vs_dogs_small.zip": _digests("f0d9930c66ad1d3226b3a5772bc165303dd11fb60c3703d98f768556b71176ff")},
        ),
        # Microsoft's public copy of the Kaggle archive (the one Keras's example downloads): PetImages/{Cat,Dog}/N.jpg.
        # The raw folder keeps a cut of it in the mirror's layout (cnnlab.data.petimages). Size and sha256 as
        # published in huggingface/datasets, datasets/cats_vs_dogs/dataset_infos.json ("download_checksums"), and
        # the same sha256 in gomlx/gomlx, examples/dogsvscats/dogsvscats.go (DownloadChecksum).
        Layout(
            "petimages-zip",
            {PETIMAGES_ZIP: _digests("b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9")},
            sizes={PETIMAGES_ZIP: 824_887_076},
            cut="cats_vs_dogs_petimages.zip",
        ),
    ),
    mirror_dir="cats_vs_dogs",
    online_base="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/",
    online_layout=1,
    has_validation_split=True,
    binary=True,
)

DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (FASHION_MNIST, MNIST, CIFAR10, CATS_VS_DOGS)}
