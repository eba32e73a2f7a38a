"""Chapter 05 teaches the relation network and the contrastive loss inline; they must equal the package."""

import pytest
import torch

from course_utils.vision import multimodal as mm
from course_utils.vision import contrastive
from notebook_code import inline_namespace


@pytest.fixture(scope="module")
def inline():
    return inline_namespace("05_multimodal_fusion.ipynb")


def test_inline_defines_the_taught_code(inline):
    for name in ("RelationNetwork", "contrastive_loss"):
        assert callable(inline.get(name)), f"chapter 05 should define {name} in a cell tagged inline"


@pytest.mark.parametrize("n_elements, d_image", [(6, 10), (25, 34)])
def test_inline_relation_network_equals_package(inline, n_elements, d_image):
    torch.manual_seed(0)
    ours = inline["RelationNetwork"](d_image, n_elements, 16, hidden=32)
    package = mm.RelationNetwork(d_image, n_elements, 16, hidden=32)
    package.load_state_dict(ours.state_dict())
    elements = torch.randn(3, n_elements, d_image)
    question = mm.QuestionEncoding(torch.randn(3, 16), torch.randn(3, 1, 16), torch.ones(3, 1, dtype=torch.bool))
    torch.testing.assert_close(ours(elements, question), package(elements, question))
    torch.testing.assert_close(
        ours.first_layer(elements, question.vector),
        package.naive_pairs(elements, question.vector),
        atol=1e-5,
        rtol=1e-5,
    )


def test_inline_contrastive_loss_equals_package(inline):
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    for t in (0.07, 1.0):
        torch.testing.assert_close(inline["contrastive_loss"](img, txt, t), contrastive.contrastive_loss(img, txt, t))
