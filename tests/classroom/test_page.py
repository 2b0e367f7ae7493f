"""The page of one tab, rendered as Solara renders it in a tab's kernel: the app's view with
an explorer of the shared model; closed with the tab, its explorer and widgets too.

Run in a fresh Python: importing Solara outside its server replaces ``comm.create_comm`` for
the whole process with one that keeps every widget ever made (its ``orphan_comm_stacks``),
which would keep the other tests' closed explorers alive."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import solara
    from gradcam_widget.classroom import page
    from gradcam_widget.classroom.shared import SharedModels

    def views_in(box):
        found, stack = [], [box]
        while stack:
            widget = stack.pop()
            if hasattr(widget, "explorer"):
                found.append(widget)
            stack.extend(getattr(widget, "children", ()))
        return found

    shared = SharedModels("shapes")
    page.serve_models(shared)
    box, rendering = solara.render(page.Page(), handle_error=False)
    assert page.open_views() == 1
    (view,) = views_in(box)
    explorer = view.explorer
    assert explorer.session.model is shared.model("shapes")
    assert explorer.session.passes is shared.queue("shapes")
    assert explorer.image_name == "two_shapes"
    rendering.close()  # what the tab's kernel does when it closes
    assert page.open_views() == 0
    assert explorer.closed and view.comm is None

    first_box, first = solara.render(page.Page(), handle_error=False)
    second_box, second = solara.render(page.Page(), handle_error=False)
    (one,), (two,) = views_in(first_box), views_in(second_box)
    one, two = one.explorer, two.explorer
    assert one is not two and one.session.model is two.session.model
    one.set_image("shape scene 1000001")
    assert two.image_name != "shape scene 1000001"
    first.close()
    second.close()
    assert one.closed and two.closed and page.open_views() == 0
    print("ok")
    """
)


def test_a_tab_gets_its_own_view_on_the_shared_model_and_gives_it_back():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
