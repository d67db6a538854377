"""A reply's Markdown becomes HTML on the server; nothing the model printed can run in the admin."""
from chat.markdown_html import render_markdown, sanitize


def test_the_sanitizer_removes_scripts_with_their_text():
    assert sanitize("<p>hi<script>alert(1)</script></p>") == "<p>hi</p>"


def test_the_sanitizer_removes_event_handlers_and_tags_outside_the_allowlist():
    cleaned = sanitize('<p onclick="x()">a<img src=x onerror="alert(1)"><iframe src="/"></iframe>'
                       '<svg onload="alert(2)"></svg><style>*{}</style></p>')
    assert cleaned == "<p>a</p>"


def test_the_sanitizer_removes_javascript_links_however_they_are_spelled():
    for href in ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "jav&#x61;script:alert(1)",
                 "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)"]:
        cleaned = sanitize(f'<a href="{href}">x</a>')
        assert "href" not in cleaned, (href, cleaned)


def test_the_sanitizer_keeps_web_links_and_marks_them_to_open_apart():
    cleaned = sanitize('<a href="https://example.com/a?b=1" onmouseover="x()">docs</a>')
    assert cleaned == ('<a href="https://example.com/a?b=1" target="_blank" rel="noopener noreferrer nofollow">'
                       "docs</a>")


def test_the_sanitizer_keeps_only_the_alignment_of_table_cells():
    assert sanitize('<table><tr><td style="text-align:right;position:fixed">1</td></tr></table>') == \
        '<table><tbody><tr><td style="text-align:right">1</td></tr></tbody></table>'


def test_raw_html_in_markdown_is_shown_as_text():
    html = render_markdown('Look: <script>alert(1)</script> and <img src=x onerror="alert(2)">')
    assert html == ("<p>Look: &lt;script&gt;alert(1)&lt;/script&gt; and "
                    "&lt;img src=x onerror=\"alert(2)\"&gt;</p>\n")


def test_markdown_links_to_javascript_are_not_links():
    html = render_markdown("[click me](javascript:alert(1)) [ok](https://example.com)")
    assert "javascript" not in html.replace("[click me](javascript:alert(1))", "")
    assert '<a href="https://example.com"' in html


def test_markdown_images_become_links_that_load_nothing():
    html = render_markdown('![tracker](http://127.0.0.1:9/p.png "pixel")')
    assert "<img" not in html
    assert '<a href="http://127.0.0.1:9/p.png" target="_blank" rel="noopener noreferrer nofollow">' \
           "[image: tracker]</a>" in html


def test_tables_and_code_blocks_are_rendered():
    html = render_markdown("| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = '<b>'\n```\n")
    assert "<table>" in html and "<td>1</td>" in html
    assert "<pre><code>x = '&lt;b&gt;'\n</code></pre>" in html
