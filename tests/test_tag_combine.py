"""Combining taggers into one caption, and the webui interrogators read back as tags."""

import numpy as np
from PIL import Image

from lib_lorakit.host import StandaloneHost
from lib_lorakit.taggers.base import ImageTags, TagScore
from lib_lorakit.taggers.combine import combine_tags, combined_caption
from lib_lorakit.taggers.wd14 import white_square
from lib_lorakit.taggers.webui import WebuiTagger


def tags(*names, category="general"):
    return ImageTags(tags=tuple(TagScore(tag=n, score=0.9, category=category) for n in names))


def test_triggers_lead_then_booru_tags_then_clip_words_without_repeats():
    found = {"clip": tags("watercolor", "from above", "1girl", category="style"),
             "wd14": tags("1girl", "long hair", "smile")}
    assert combine_tags(found, trigger_words=["mystyle"]) == [
        "mystyle", "1girl", "long hair", "smile", "watercolor", "from above"]


def test_a_tag_spelt_differently_by_two_taggers_appears_once():
    found = {"wd14": tags("long hair"), "deepbooru": tags("long_hair", "Long Hair", "red eyes")}
    assert combine_tags(found) == ["long hair", "red eyes"]


def test_without_overwrite_what_the_user_wrote_stays_before_the_new_tags():
    found = {"wd14": tags("smile", "outdoors")}
    old = "mystyle, holding my cat, smile"
    assert combined_caption(found, trigger_words=["mystyle"], old_text=old, overwrite=False) == \
        "mystyle, holding my cat, smile, outdoors"
    assert combined_caption(found, trigger_words=["mystyle"], old_text=old, overwrite=True) == \
        "mystyle, smile, outdoors"


class InterrogatingHost(StandaloneHost):
    """Stands in for the webui's interrogators (the real ones run in tests/test_webui.py)."""

    def __init__(self, answers):
        self.answers, self.seen = answers, []

    def interrogate(self, name, images):
        self.seen.append((name, [im.size for im in images]))
        return self.answers[: len(images)]


def test_webui_interrogator_text_becomes_tags_including_ranked_output():
    host = InterrogatingHost(["1girl, (smile:0.873), long_hair", "a painting of a cat, oil painting"])
    tagger = WebuiTagger(host, "deepbooru")
    batch = [tagger.prepare(Image.new("RGB", (300, 120), "red")), tagger.prepare(Image.new("RGB", (64, 64)))]
    out = tagger.predict(np.stack(batch))
    assert host.seen == [("deepbooru", [(512, 512), (512, 512)])]
    assert out[0].names == ["1girl", "smile", "long_hair"]
    assert out[0].tags[1].score == 0.873
    assert out[1].names == ["a painting of a cat", "oil painting"]


def test_the_padded_square_keeps_the_whole_picture_on_white():
    im = Image.new("RGB", (200, 100), (255, 0, 0))
    sq = white_square(im, 100)
    assert sq.size == (100, 100)
    assert sq.getpixel((50, 50)) == (255, 0, 0)
    assert sq.getpixel((50, 5)) == (255, 255, 255)


def test_outside_the_webui_there_are_no_interrogators():
    host = StandaloneHost.from_options(home="/nonexistent-home")
    assert host.interrogators() == []


def test_escaping_applies_to_every_taggers_brackets_and_only_when_asked():
    found = {"wd14": tags("kirby (series)"), "clip": tags("watercolor (medium)", category="medium")}
    assert combined_caption(found) == "kirby (series), watercolor (medium)"
    assert combined_caption(found, escape=True) == "kirby \\(series\\), watercolor \\(medium\\)"
