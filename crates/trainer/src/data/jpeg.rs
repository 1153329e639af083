//! JPEG decoding through libjpeg-turbo, pixel for pixel as `PIL.Image.open(f).convert("RGB")`.
//!
//! torchvision's `ImageFolder` reads images with PIL, and PIL decodes JPEG with libjpeg-turbo at the
//! library's defaults: the accurate integer inverse DCT (`JDCT_ISLOW`) and "fancy" (triangle-filter)
//! chroma upsampling. TurboJPEG's defaults are the same (`TJPARAM_FASTDCT` and
//! `TJPARAM_FASTUPSAMPLE` off), so decoding through it gives PIL's pixels exactly, where another
//! decoder (the `image` crate's zune-jpeg) rounds the IDCT and upsampling differently (22% of
//! CIFAR-10's pixel values, by up to 5 grey levels). `tests/data.rs` checks every kind of file PIL
//! writes against PIL's own decode; `cargo xtask jpeg-check` the 60,000 CIFAR-10 JPEGs.
//!
//! # Colour
//! - YCbCr, RGB (Adobe transform 0) and grayscale files: libjpeg-turbo converts them to RGB;
//!   grayscale gives R = G = B = Y, as PIL's `L → RGB` does.
//! - CMYK and YCCK files (YCCK is converted to CMYK by libjpeg-turbo): PIL reads every 4-component
//!   JPEG with Adobe's inverted polarity (raw mode `CMYK;I`, whether or not the file has an Adobe
//!   marker), so its C = 255 − stored value, and converts CMYK to RGB without a colour profile:
//!   `R = clip(nk − muldiv255(C, nk))` with `nk = 255 − K`, and the same for G and B, where
//!   `muldiv255(a, b) = (t + (t >> 8)) >> 8` for `t = a·b + 128` (that is, `a·b / 255` rounded).
//!
//! # Damaged files
//! PIL ignores libjpeg's warnings (corrupt entropy data, extra bytes between markers: the image is
//! decoded as libjpeg recovers it), but refuses a file that ends before the image does ("image file
//! is truncated") and any libjpeg error. So do we: a first pass stops at the first warning; if there
//! was one, it is an error when it is libjpeg's "Premature end of JPEG file", and otherwise a
//! second pass decodes through the warnings. One case differs: a file whose end is missing *and*
//! that raised another warning before libjpeg reached the end decodes (the missing part as libjpeg
//! fills it) where PIL refuses it, because TurboJPEG keeps only the first warning's message.

use std::cell::RefCell;
use std::ffi::{c_int, CStr};

use image::RgbImage;
use turbojpeg_sys as tj;

/// Largest decoded image accepted, in bytes (the `image` crate's default allocation limit): a
/// header that claims 65,535 × 65,535 pixels is refused instead of exhausting memory.
const MAX_DECODED_BYTES: usize = 512 << 20;

/// libjpeg's warning for a file that ends before the image does (`JWRN_JPEG_EOF`).
const JPEG_EOF: &str = "Premature end of JPEG file";

/// True for a JPEG file: the SOI marker followed by another marker (PIL's and the `image` crate's
/// test alike).
pub(crate) fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// A TurboJPEG decompression handle.
struct Decompressor(tj::tjhandle);

impl Decompressor {
    fn new() -> Result<Self, String> {
        // SAFETY: tj3Init has no preconditions; a null result is an error, reported below.
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if handle.is_null() {
            // SAFETY: a null handle asks for the global error string, a valid C string.
            let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(handle)) };
            return Err(format!(
                "libjpeg-turbo: cannot create a decompressor: {}",
                msg.to_string_lossy()
            ));
        }
        Ok(Self(handle))
    }

    /// The message of the last error or warning on this handle.
    fn error(&self) -> String {
        // SAFETY: the handle is live; tj3GetErrorStr returns a NUL-terminated string it owns.
        let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        msg.to_string_lossy().into_owned()
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is live; tj3Get only reads a parameter (-1 for an unknown one).
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    /// Decodes `bytes` to RGB, as PIL does (module docs).
    fn decode(&mut self, bytes: &[u8]) -> Result<RgbImage, String> {
        // Most files raise no warning: then the first, strict pass is the only one.
        let first_warning = match self.run(bytes, None) {
            Ok(img) => return Ok(img),
            Err(Stop::Error(msg)) => return Err(msg),
            Err(Stop::Warning(msg)) => msg,
        };
        if first_warning.contains(JPEG_EOF) {
            return Err(format!("truncated file ({first_warning})"));
        }
        self.run(bytes, Some(&first_warning))
            .map_err(|stop| match stop {
                Stop::Error(msg) | Stop::Warning(msg) => msg,
            })
    }

    /// Reads the header and decompresses, to RGB for every colour space but CMYK and YCCK, which
    /// libjpeg-turbo gives as CMYK and [`cmyk_to_rgb`] converts.
    ///
    /// With `tolerated` `None`, TurboJPEG stops at the first warning ([`Stop::Warning`]). With
    /// `Some(first)` (that first warning) it decodes through warnings: TurboJPEG's message stays the
    /// first warning unless an error follows, which replaces the message but is still reported with
    /// the warning code, so a different message is a [`Stop::Error`].
    fn run(&mut self, bytes: &[u8], tolerated: Option<&str>) -> Result<RgbImage, Stop> {
        let check = |this: &Self, rc: c_int| -> Result<(), Stop> {
            if rc == 0 {
                return Ok(());
            }
            let msg = this.error();
            // SAFETY: the handle is live.
            let warned = unsafe { tj::tj3GetErrorCode(this.0) } == tj::TJERR_TJERR_WARNING as c_int;
            match tolerated {
                Some(first) if warned && msg == first => Ok(()),
                None if warned => Err(Stop::Warning(msg)),
                _ => Err(Stop::Error(msg)),
            }
        };
        // SAFETY: the handle is live; setting a known parameter to 0 or 1 only stores it.
        let rc = unsafe {
            tj::tj3Set(
                self.0,
                tj::TJPARAM_TJPARAM_STOPONWARNING as c_int,
                c_int::from(tolerated.is_none()),
            )
        };
        check(self, rc)?;
        let len = bytes.len() as tj::size_t;
        // SAFETY: the handle is live and libjpeg-turbo reads at most `len` bytes of `bytes`.
        check(self, unsafe {
            tj::tj3DecompressHeader(self.0, bytes.as_ptr(), len)
        })?;
        let width = self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
        let height = self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
        let colorspace = self.get(tj::TJPARAM_TJPARAM_COLORSPACE);
        let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
            return Err(Stop::Error(format!("bad image size {width}x{height}")));
        };
        if w == 0 || h == 0 {
            return Err(Stop::Error("zero-sized image".into()));
        }
        let four =
            colorspace == tj::TJCS_TJCS_CMYK as c_int || colorspace == tj::TJCS_TJCS_YCCK as c_int;
        let (format, channels) = if four {
            (tj::TJPF_TJPF_CMYK, 4)
        } else {
            (tj::TJPF_TJPF_RGB, 3)
        };
        let size = (w as usize)
            .checked_mul(h as usize)
            .and_then(|p| p.checked_mul(channels))
            .filter(|&n| n <= MAX_DECODED_BYTES)
            .ok_or_else(|| {
                Stop::Error(format!(
                    "{w}x{h} image is too large (over {MAX_DECODED_BYTES} bytes decoded)"
                ))
            })?;
        let mut pixels = vec![0u8; size];
        // SAFETY: the handle is live; `pixels` holds width × height × channels bytes, exactly what
        // tj3Decompress8 writes with pitch 0 (rows packed) and this pixel format, at the size of the
        // header just read from the same bytes.
        check(self, unsafe {
            tj::tj3Decompress8(
                self.0,
                bytes.as_ptr(),
                len,
                pixels.as_mut_ptr(),
                0,
                format as c_int,
            )
        })?;
        if four {
            pixels = cmyk_to_rgb(&pixels);
        }
        RgbImage::from_raw(w, h, pixels)
            .ok_or_else(|| Stop::Error("decoded buffer size mismatch".into()))
    }
}

/// Why a decoding pass stopped.
enum Stop {
    /// At the first warning (strict pass), with its message.
    Warning(String),
    /// At an error, with its message.
    Error(String),
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// PIL's `CMYK;I` read followed by its `CMYK → RGB` conversion, on libjpeg's 4-byte CMYK pixels.
fn cmyk_to_rgb(stored: &[u8]) -> Vec<u8> {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let mut rgb = Vec::with_capacity(stored.len() / 4 * 3);
    for px in stored.chunks_exact(4) {
        // Adobe polarity: the file stores 255 − C (and 255 − K), so nk = 255 − K = the stored K.
        let nk = u32::from(px[3]);
        for &s in &px[..3] {
            let c = 255 - u32::from(s);
            rgb.push(nk.saturating_sub(muldiv255(c, nk)) as u8);
        }
    }
    rgb
}

thread_local! {
    /// One decompressor per thread, reused: creating one allocates libjpeg's state each time.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Decodes a JPEG file's bytes to RGB exactly as `PIL.Image.open(f).convert("RGB")` does.
///
/// Errors are libjpeg-turbo's messages (not a JPEG, unsupported kind, corrupt headers), a truncated
/// file, or an image over 512 MiB decoded.
pub(crate) fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    let reused = DECOMPRESSOR.try_with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return None; // not reachable (no re-entry), but never panic
        };
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => match Decompressor::new() {
                Ok(d) => slot.insert(d),
                Err(e) => return Some(Err(e)),
            },
        };
        Some(decompressor.decode(bytes))
    });
    match reused {
        Ok(Some(result)) => result,
        // The thread is shutting down (or the slot is busy): use a decompressor of our own.
        _ => Decompressor::new()?.decode(bytes),
    }
}
