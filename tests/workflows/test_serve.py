"""Using the champion: `cnnlab predict` and `cnnlab serve` on a registered model, the page in a real browser, and
`mlflow models serve` answering with class names."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from cnnlab.catalog.datasets import FASHION_MNIST
from cnnlab.cli.commands import main
from cnnlab.tracking.cards import ModelCard
from cnnlab.tracking.registry import CHAMPION, model_name
from cnnlab.tracking.runs import log_keras_model
from cnnlab.tracking.server import mlflow_server
from cnnlab.workflows.serve_app import ServeError, create_app, server
from cnnlab.workflows.serving import NO_GRAD_CAM, Served, load_served
from helpers.project import free_port

CLASSES = list(FASHION_MNIST.classes)


@pytest.fixture(scope="module")
def trained(fashion: dict) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """A small CNN that learns Fashion-MNIST (pixel values in, like the project's models), and test images."""
    keras.utils.set_random_seed(0)
    images, labels = fashion["train"]
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images[:6000].astype("float32"), labels[:6000], epochs=2, batch_size=64, verbose=0)
    test_images, test_labels = fashion["test"]
    return model, test_images[:300].astype("float32"), test_labels[:300]


def expected(model: keras.Model, images: np.ndarray) -> list[str]:
    return [CLASSES[i] for i in model.predict(images, verbose=0).argmax(axis=-1)]


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image[..., 0].astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


def register_champion(model: keras.Model, sample: np.ndarray) -> str:
    """The model logged as the train stage logs it, registered as cnnlab-F1 and made champion."""
    with mlflow.start_run():
        card = ModelCard(CLASSES, (28, 28, 1), "fashion_mnist").metadata()
        info = log_keras_model(model, sample, metadata=card, registered_model_name=model_name("F1"))
    mlflow.MlflowClient().set_registered_model_alias(model_name("F1"), CHAMPION, str(info.registered_model_version))
    return f"models:/{model_name('F1')}@{CHAMPION}"


def test_the_trained_model_learns(trained: tuple) -> None:
    model, images, labels = trained
    assert (model.predict(images, verbose=0).argmax(axis=-1) == labels).mean() > 0.7  # chance: 10%


def test_the_api_answers_with_class_names_grad_cam_and_per_file_errors(trained: tuple) -> None:
    model, images, _ = trained
    client = create_app(Served(model, CLASSES, "F1"), top=3).test_client()
    response = client.post(
        "/api/predict",
        data={"images": [(io.BytesIO(png_bytes(images[0])), "first.png"), (io.BytesIO(b"not an image"), "x.png")]},
    )
    assert response.status_code == 200
    first, refused = response.get_json()["results"]
    assert first["file"] == "first.png" and first["top"][0]["class"] == expected(model, images[:1])[0]
    assert len(first["top"]) == 3 and first["top"][0]["probability"] >= first["top"][1]["probability"]
    heatmap = Image.open(io.BytesIO(base64.b64decode(first["grad_cam"].removeprefix("data:image/png;base64,"))))
    assert heatmap.size[0] >= 224  # drawn large enough to see a 28x28 image
    assert refused == {"file": "x.png", "error": refused["error"]} and "not an image file" in refused["error"]


def test_an_upload_over_the_limit_gets_413_and_a_request_without_images_400(trained: tuple) -> None:
    model = trained[0]
    client = create_app(Served(model, CLASSES, "F1"), limit_mb=0.0001).test_client()
    big = client.post("/api/predict", data={"images": [(io.BytesIO(b"x" * 1000), "big.png")]})
    assert big.status_code == 413 and "--max-upload-mb" in big.get_json()["error"]
    empty = create_app(Served(model, CLASSES, "F1")).test_client().post("/api/predict", data={})
    assert empty.status_code == 400 and "images" in empty.get_json()["error"]


def test_a_model_without_convolution_says_grad_cam_does_not_apply() -> None:
    dense = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    client = create_app(Served(dense, CLASSES, "F0")).test_client()
    image = np.zeros((28, 28, 1), dtype=np.uint8)
    (result,) = client.post("/api/predict", data={"images": [(io.BytesIO(png_bytes(image)), "a.png")]}).get_json()[
        "results"
    ]
    assert result["grad_cam_note"] == NO_GRAD_CAM and "grad_cam" not in result


def test_serve_binds_to_loopback_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "no-such-model", "--host", "0.0.0.0"]) == 2  # refused before any model is looked for
    with pytest.raises(ServeError, match="binds to this machine only"):
        server(Served(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]), ["a", "b"], "m"), "10.1.2.3", 0)


def test_predict_and_the_pyfunc_take_the_registered_champion_with_its_class_names(
    trained: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model, images, _ = trained
    uri = register_champion(model, images[:2])
    names = expected(model, images[:4])
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(images[i]))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", uri, *(f"{i}.png" for i in range(4)), "--top", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].rsplit(" ", 1)[0] for line in printed] == names
    table = mlflow.pyfunc.load_model(uri).predict(images[:4])
    assert table["class"].tolist() == names
    assert np.allclose(np.stack(table["probabilities"]), model.predict(images[:4], verbose=0), atol=1e-5)
    assert load_served(uri, tmp_path).classes == CLASSES
    assert mlflow.keras.load_model(uri).count_params() == model.count_params()  # Keras' own flavor still loads


def test_an_unknown_model_uri_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "models:/cnnlab-NOPE@champion", str(tmp_path / "a.png")]) == 2
    assert "dvc repro evaluate@" in capsys.readouterr().err


@pytest.fixture
def served_page(trained: tuple) -> Iterator[str]:
    model, _, _ = trained
    running = server(Served(model, CLASSES, "F1"), "127.0.0.1", 0)
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{running.server_port}/"
    running.shutdown()


@pytest.mark.slow
def test_the_page_shows_the_class_of_an_uploaded_image_in_a_browser(
    trained: tuple, served_page: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    model, images, _ = trained
    picture = tmp_path / "coat.png"
    picture.write_bytes(png_bytes(images[7]))
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is missing: run `apt-get install chromium` (scripts/setup.sh does)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page()
        page.goto(served_page)
        page.set_input_files("#files", str(picture))
        shown = page.locator(".result .top-class").first
        shown.wait_for(timeout=60_000)
        assert shown.text_content() == expected(model, images[7:8])[0]
        assert page.locator(".result img.grad-cam").first.get_attribute("src").startswith("data:image/png;base64,")
        browser.close()


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_class_name(trained: tuple, private_mlflow: str) -> None:
    model, images, _ = trained
    uri = register_champion(model, images[:2])
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    path = f"{mlflow_cli.parent}{os.pathsep}{os.environ['PATH']}"  # as in an activated venv: it runs uvicorn
    command = [str(mlflow_cli), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1"]
    env = os.environ | {"MLFLOW_TRACKING_URI": private_mlflow, "PATH": path}
    process = subprocess.Popen([*command, "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else ""
                assert time.monotonic() < deadline, "mlflow models serve did not start in 120 s"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images[:3].tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        predictions = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert [p["class"] for p in predictions] == expected(model, images[:3])


@pytest.mark.slow
def test_predict_takes_the_champion_from_a_tracking_server(
    trained: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same command against `mlflow server` on loopback: the model and its card come over HTTP."""
    model, images, _ = trained
    store = f"sqlite:///{tmp_path / 'server.db'}"
    with mlflow_server(
        store, tmp_path / "artifacts", "127.0.0.1", free_port(), tmp_path / "server.log", workers=1
    ) as url:  # one client: the other three workers would only cost their start
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        uri = register_champion(model, images[:2])
        (tmp_path / "work").mkdir()
        (tmp_path / "work" / "a.png").write_bytes(png_bytes(images[0]))
        monkeypatch.chdir(tmp_path / "work")  # no project store here: only the server has the model
        capsys.readouterr()  # MLflow's own lines about the registered run
        assert main(["predict", uri, "a.png", "--top", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"a.png: {expected(model, images[:1])[0]} ")
