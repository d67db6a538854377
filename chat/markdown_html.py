"""A reply's Markdown as safe HTML, rendered on the server for the admin's transcript.

Two layers, so that neither alone has to be perfect: markdown-it-py renders with raw HTML
turned off (a `<script>` the model printed becomes text) and refuses javascript:/data: links;
nh3 (the Ammonia sanitizer) then keeps only an allowlist of tags, attributes and URL schemes.
"""
import nh3
from django.utils.html import escape
from django.utils.safestring import mark_safe
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "code", "em", "strong", "s",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}}

_cleaner = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    clean_content_tags={"script", "style"},
    attributes=ALLOWED_ATTRIBUTES,
    filter_style_properties={"text-align"},  # a table column's alignment, nothing else
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer nofollow",
    set_tag_attribute_values={"a": {"target": "_blank"}},
)


def _image_as_link(renderer, tokens, index, options, env):
    # An image would load as soon as the page opens (a tracking pixel); a link loads nothing.
    token = tokens[index]
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    return f'<a href="{escape(token.attrGet("src") or "")}">[image: {escape(alt)}]</a>'


_markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
_markdown.add_render_rule("image", _image_as_link)


def sanitize(html):
    """Only the allowlisted tags, attributes and URL schemes of `html` (scripts removed with their text)."""
    return _cleaner.clean(html)


def render_markdown(text):
    """`text` as Markdown, rendered and sanitized: safe to put in a page."""
    return mark_safe(sanitize(_markdown.render(text or "")))  # noqa: S308 - sanitized just now
