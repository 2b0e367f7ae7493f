"""The precision lock: choices checked, blocks of one precision refuse the other inside."""

import pytest

from gradcam_widget.engine._tf import tf
from gradcam_widget.engine.precision import (
    PRECISIONS,
    bfloat16_supported,
    check_precision,
    precision_scope,
)

OPTION = "auto_mixed_precision_onednn_bfloat16"


def test_check_precision_names_the_choices():
    assert PRECISIONS == ("float32", "bfloat16")
    assert check_precision("float32") == "float32"
    with pytest.raises(ValueError, match="float32"):
        check_precision("float16")
    if not bfloat16_supported():
        with pytest.raises(ValueError, match="AMX"):
            check_precision("bfloat16")


def test_blocks_switch_the_option_only_inside_and_refuse_mixing():
    def option():
        return tf.config.optimizer.get_experimental_options().get(OPTION, False)

    before = option()
    with precision_scope("bfloat16"):
        assert option() is True
        with precision_scope("bfloat16"):  # nested, same precision: fine
            assert option() is True
        inner = "float32 pass cannot run inside a bfloat16"
        with pytest.raises(RuntimeError, match=inner), precision_scope("float32"):
            pass
    assert option() == before
    with precision_scope("float32"):
        assert option() == before
