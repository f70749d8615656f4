/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * escape - show bytes that came from outside (a client's export name, a
 * TLS identity) in a log line or a reply string without letting them
 * forge a line, hide text, or break the UTF-8 that the NBD spec requires
 * of every string.
 */
#ifndef TV_UTIL_ESCAPE_H
#define TV_UTIL_ESCAPE_H

#include <stddef.h>

/*
 * Write in[0, inlen) to out as printable, valid UTF-8, NUL-terminated,
 * in at most outlen bytes (outlen >= 8):
 *
 *   - printable ASCII stays, except '\', which becomes "\\";
 *   - a well-formed UTF-8 sequence (shortest form, no surrogate, at most
 *     U+10FFFF) of a character that is not a control stays;
 *   - characters that control, hide or move text rather than show it
 *     (the C1 controls, format characters such as the bidirectional and
 *     zero-width controls and the tag characters, the line and
 *     paragraph separators, private use, default-ignorable code points
 *     such as the Hangul fillers: the table in escape.c names its
 *     Unicode sources) become "\uXXXX", or "\UXXXXXXXX" beyond U+FFFF;
 *   - every other byte (C0 controls such as newline, DEL, a byte of a
 *     malformed sequence) becomes "\xNN".
 *
 * Output that does not fit is cut at a character boundary and ends in
 * "...".  Returns out.  O(inlen).
 */
char *esc_text(char *out, size_t outlen, const void *in, size_t inlen);

/* The same for a NUL-terminated string. */
char *esc_str(char *out, size_t outlen, const char *s);

/*
 * Copy the NUL-terminated s to out (outlen >= 8) with every C0 control
 * byte and DEL as "\xNN", cut to fit; everything else is left as it
 * is.  The logger's last line of defence: what it writes is one line,
 * whatever a caller passed in.  Returns out.
 */
char *esc_controls(char *out, size_t outlen, const char *s);

#endif
