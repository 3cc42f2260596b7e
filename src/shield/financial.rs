//! Payment identifiers: card numbers (length, issuer prefix and Luhn checksum) and IBANs
//! (country, per-country length and ISO 7064 mod-97 checksum).
//!
//! Checksums are what make these detectors precise: a random 16-digit order number passes Luhn
//! one time in ten and a known issuer prefix far less often, and a random IBAN-shaped string
//! passes mod-97 about one time in 97.

/// Whether a candidate (digits with optional spaces or dashes) is a plausible payment card
/// number: a single kind of separator, 13–19 digits, a known issuer prefix for that length, and a
/// valid Luhn checksum.
pub(crate) fn is_card(candidate: &str) -> bool {
    let mut digits = [0u8; 19];
    let mut n = 0;
    let mut sep = None;
    for b in candidate.bytes() {
        if b.is_ascii_digit() {
            if n == digits.len() {
                return false;
            }
            digits[n] = b - b'0';
            n += 1;
        } else if *sep.get_or_insert(b) != b {
            // "4111 1111-1111 1111" mixes separators: not how anyone writes a card number.
            return false;
        }
    }
    let digits = &digits[..n];
    n >= 13 && known_issuer(digits) && luhn(digits)
}

/// The Luhn (mod 10) checksum over decimal digits.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Whether the leading digits belong to a card scheme that issues numbers of this length.
fn known_issuer(digits: &[u8]) -> bool {
    let prefix = |k: usize| {
        digits
            .iter()
            .take(k)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let len = digits.len();
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    match p1 {
        // Visa.
        4 => matches!(len, 13 | 16 | 19),
        // Mastercard 2-series, 2221-2720.
        2 => (2221..=2720).contains(&p4) && len == 16,
        // Amex 34/37, Diners 300-305/36/38/39, JCB 3528-3589.
        3 => match p2 {
            34 | 37 => len == 15,
            36 | 38 | 39 => (14..=19).contains(&len),
            30 => (300..=305).contains(&p3) && (14..=19).contains(&len),
            35 => (3528..=3589).contains(&p4) && (16..=19).contains(&len),
            _ => false,
        },
        // Mastercard 51-55; Maestro 50, 56-58.
        5 => match p2 {
            51..=55 => len == 16,
            50 | 56..=58 => (12..=19).contains(&len),
            _ => false,
        },
        // Discover 6011/644-649/65, UnionPay 62, Maestro 6304/6759/676770/676774.
        6 => {
            let discover = p4 == 6011 || (644..=649).contains(&p3) || p2 == 65;
            let maestro = matches!(p4, 6304 | 6759) || matches!(p6, 676_770 | 676_774);
            ((discover || p2 == 62) && (16..=19).contains(&len))
                || (maestro && (12..=19).contains(&len))
        }
        _ => false,
    }
}

/// IBAN length per country (ISO 13616 registry), including the 2-letter code and check digits.
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// Validates an IBAN candidate starting at `start` (the regex match ends at `end`, possibly past
/// the IBAN) and returns where the IBAN really ends: after exactly the country's number of
/// characters, with single spaces allowed between them. `None` when the country is unknown, the
/// text is too short, the IBAN runs on into more letters or digits, or mod-97 fails.
pub(crate) fn iban_end(text: &str, start: usize, end: usize) -> Option<usize> {
    let bytes = text.as_bytes().get(start..end)?;
    let country = bytes.get(..2)?;
    let &(_, len) = IBAN_LENGTHS.iter().find(|(c, _)| c.as_slice() == country)?;
    // Rearranged order for mod-97: BBAN first, then country and check digits.
    let mut remainder = 0u32;
    let mut count = 0;
    let mut stop = None;
    let mut head = [0u8; 4];
    for (i, &b) in bytes.iter().enumerate() {
        if b == b' ' {
            continue;
        }
        if count < 4 {
            head[count] = b;
        } else {
            remainder = mod97_push(remainder, b)?;
        }
        count += 1;
        if count == len {
            stop = Some(start + i + 1);
            break;
        }
    }
    let stop = stop?;
    if super::pii::byte_at(text, stop).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    for &b in &head {
        remainder = mod97_push(remainder, b)?;
    }
    (remainder == 1).then_some(stop)
}

/// Appends one IBAN character (digit, or letter as 10..=35) to a running mod-97 remainder.
fn mod97_push(remainder: u32, b: u8) -> Option<u32> {
    Some(match b {
        b'0'..=b'9' => (remainder * 10 + u32::from(b - b'0')) % 97,
        b'A'..=b'Z' => (remainder * 100 + u32::from(b - b'A') + 10) % 97,
        _ => return None,
    })
}
