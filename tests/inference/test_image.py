"""The fast serving image is synthesized only (no Docker engine here): check what it is built from."""

from __future__ import annotations

import re
from pathlib import Path

from inference import serve

INFERENCE_DIR = Path(serve.__file__).resolve().parent
PROJECT_ROOT = INFERENCE_DIR.parent


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if m:
            found[m.group(1).lower()] = m.group(2)
    return found


def test_image_pins_match_the_repository_environment():
    image, repo = pins(INFERENCE_DIR / "requirements-serve.txt"), pins(PROJECT_ROOT / "requirements.txt")
    assert {"numpy", "scikit-learn", "joblib", "orjson", "granian"} <= set(image)
    assert image["numpy"] == "1.26.4" and image["scikit-learn"] == "1.2.1"
    for name, version in image.items():
        assert repo.get(name) == version, (
            f"{name}=={version} in the image, {repo.get(name)} in requirements.txt"
        )


def test_no_requirements_txt_in_the_sagemaker_source_dir():
    # the scikit-learn container would pip-install it at every start
    assert not (INFERENCE_DIR / "requirements.txt").exists()


def test_dockerfile_follows_the_byo_container_contract():
    text = (INFERENCE_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert 'ENTRYPOINT ["python", "/opt/program/serve.py"]' in text
    assert 'CMD ["serve"]' in text and "EXPOSE 8080" in text
    copied = [name for group in re.findall(r"^COPY (.+) \./$", text, re.M) for name in group.split()]
    for name in copied:
        assert (INFERENCE_DIR / name).is_file(), f"the Dockerfile copies {name}, which does not exist"
    assert {"requirements-serve.txt", "codec.py", "serve.py"} <= set(copied)
    # `docker run IMAGE serve` passes "serve" to serve.py, which must accept it
    assert serve.parse_args(["serve"]).command == "serve"
