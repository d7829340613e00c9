"""Folder-name rules and the modified UTF-7 codec shared by every layer."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from ktmail.errors import ValidationError
from ktmail.model import decode_mutf7, encode_mutf7, normalize_folder_name
from ktmail.store.folder_names import folder_dirname, folder_name_from_dirname


class ModifiedUTF7Tests(unittest.TestCase):
    def test_known_encodings(self):
        """RFC 3501 §5.1.3 examples and Dovecot's spelling of Swedish names."""
        self.assertEqual(encode_mutf7("Försäkring"), "F&APY-rs&AOQ-kring")
        self.assertEqual(encode_mutf7("~peter/mail/台北/日本語"),
                         "~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        self.assertEqual(encode_mutf7("R&D"), "R&-D")
        self.assertEqual(decode_mutf7("&ZeVnLIqe-"), "日本語")

    def test_non_canonical_forms_are_refused(self):
        """Only the canonical encoding decodes, so a name maps to one directory."""
        for bad in ("&AGE-", "&", "&Jjo", "caf\xe9", "&ZeVnLIqe"):
            with self.assertRaises(ValueError, msg=bad):
                decode_mutf7(bad)

    @given(st.text(max_size=40))
    def test_round_trip(self, text):
        """Every text survives encode -> decode."""
        self.assertEqual(decode_mutf7(encode_mutf7(text)), text)


class FolderNameTests(unittest.TestCase):
    def test_canonical_names(self):
        """INBOX is spelled INBOX at the top level only."""
        self.assertEqual(normalize_folder_name("inbox"), "INBOX")
        self.assertEqual(normalize_folder_name("InBox/Sub"), "INBOX/Sub")
        self.assertEqual(normalize_folder_name("Archive/inbox"), "Archive/inbox")

    @given(st.text(max_size=60))
    def test_accepted_names_make_one_safe_directory(self, text):
        """Whatever a client sends, an accepted name becomes a single
        directory entry starting with '.', that maps back to the same name."""
        try:
            name = normalize_folder_name(text)
        except ValidationError:
            return
        dirname = folder_dirname(name)
        if name == "INBOX":
            self.assertEqual(dirname, "")
            return
        self.assertTrue(dirname.startswith("."))
        self.assertNotIn("/", dirname)
        self.assertNotIn("..", dirname)
        self.assertLessEqual(len(dirname.encode()), 255)
        self.assertEqual(folder_name_from_dirname(dirname), name)
