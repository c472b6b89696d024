//! A request's pictures: base64 text (or a `data:` URL holding it) -> bytes -> an RGB image, with the size
//! limits of every picture the daemon reads -> the encoder's input. A picture that does not decode is the
//! client's mistake: 400, with where it was in the request and why.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use image::RgbImage;

use super::Failure;
use crate::caption::captioner::timed;
use crate::caption::preprocess::{self, Preprocessor};
use crate::daemon::board::Prepared;

/// Standard base64, with or without its padding: clients differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Each `(where, text)` decoded and turned into the encoder's input at once, in order, so that one decoded
/// picture is held at a time; the first that fails is the answer.
pub(super) fn prepare_all(
    pictures: &[(String, String)],
    preprocessor: &Preprocessor,
) -> Result<Vec<Prepared>, Failure> {
    pictures
        .iter()
        .map(|(place, text)| {
            let image = decode(place, text)?;
            let mut preprocess_ms = 0.0;
            let pixels = timed(&mut preprocess_ms, || preprocessor.tensor(&image));
            Ok(Prepared {
                pixels,
                preprocess_ms,
            })
        })
        .collect()
}

fn decode(place: &str, text: &str) -> Result<RgbImage, Failure> {
    let encoded = match text.strip_prefix("data:") {
        Some(url) => match url.split_once(',') {
            Some((media, data)) if media.ends_with(";base64") => data,
            _ => {
                return Err(Failure::bad_request(format!(
                    "{place}: a data: URL must hold base64 (`data:image/jpeg;base64,...`)"
                )));
            }
        },
        None => text,
    };
    // Some clients wrap base64 in lines.
    let compact: String;
    let encoded = if encoded.bytes().any(|b| b.is_ascii_whitespace()) {
        compact = encoded.split_ascii_whitespace().collect();
        compact.as_str()
    } else {
        encoded
    };
    let bytes = BASE64
        .decode(encoded)
        .map_err(|error| Failure::bad_request(format!("{place}: not base64 ({error})")))?;
    preprocess::decode_rgb(&bytes, place, None)
        .map_err(|error| Failure::bad_request(format!("{error:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose;

    fn png() -> Vec<u8> {
        let mut bytes = Vec::new();
        RgbImage::from_pixel(3, 2, image::Rgb([200, 10, 10]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    #[test]
    fn base64_with_or_without_padding_lines_or_a_data_url() {
        let text = general_purpose::STANDARD.encode(png());
        for given in [
            text.clone(),
            text.trim_end_matches('=').to_string(),
            format!("data:image/png;base64,{text}"),
            text.as_bytes()
                .chunks(16)
                .map(|line| String::from_utf8_lossy(line).into_owned())
                .collect::<Vec<_>>()
                .join("\r\n"),
        ] {
            let image = decode("images[0]", &given).unwrap();
            assert_eq!(image.dimensions(), (3, 2));
            assert_eq!(image.get_pixel(2, 1).0, [200, 10, 10]);
        }
    }

    #[test]
    fn what_is_no_picture_is_named_with_its_place() {
        let refused = |text: &str| decode("images[1]", text).unwrap_err();
        let not_base64 = refused("not base64!");
        assert_eq!(not_base64.status, 400);
        assert!(
            not_base64.message.starts_with("images[1]: not base64"),
            "{not_base64:?}"
        );
        let text = refused(&general_purpose::STANDARD.encode("just some text"));
        assert!(
            text.message.contains("images[1]")
                && text.message.contains("not a recognised image format"),
            "{text:?}"
        );
        let url = refused("data:image/png,abc");
        assert!(url.message.contains("must hold base64"), "{url:?}");
        let mut cut = png();
        cut.truncate(cut.len() / 2);
        let truncated = refused(&general_purpose::STANDARD.encode(cut));
        assert!(truncated.message.contains("images[1]"), "{truncated:?}");
    }
}
