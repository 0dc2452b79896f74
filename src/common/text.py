"""Text for people: values shortened to fit a table's cell or a picture's label."""

__all__ = ["shorten"]


def shorten(text: str, width: int) -> str:
    """`text`, or its beginning and end around `…` where it is longer than `width` characters."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"
