//! Property tests of the telnet filter: whatever a client sends, commands never reach the
//! guest as data, escaped data comes through unchanged, and read boundaries do not matter.

use chardev_socket::telnet::{escape_into, TelnetInput};
use proptest::prelude::*;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const BREAK: u8 = 243;

/// Filters `input` in the pieces `cuts` makes of it; returns the data and the breaks'
/// offsets in that data.
fn filter_in_pieces(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut state = TelnetInput::default();
    let (mut out, mut breaks) = (Vec::new(), Vec::new());
    let mut start = 0;
    for end in cuts.into_iter().chain([input.len()]) {
        let mut piece = input[start..end].to_vec();
        let base = out.len();
        let n = state.filter(&mut piece, |at| breaks.push(base + at));
        assert!(n <= piece.len(), "more data out than in");
        out.extend_from_slice(&piece[..n]);
        start = end;
    }
    (out, breaks)
}

/// A piece of a client's byte stream.
#[derive(Debug, Clone)]
enum Piece {
    /// Data, escaped on the wire.
    Data(Vec<u8>),
    /// `IAC cmd` for a two-byte command other than BREAK.
    Command(u8),
    /// `IAC BREAK`.
    Break,
    /// `IAC WILL|WONT|DO|DONT option`.
    Negotiation(u8, u8),
    /// `IAC SB payload IAC SE`, the payload's IACs doubled.
    Sub(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Piece::Data),
        any::<u8>()
            .prop_filter("a two-byte command", |&c| c != IAC && c != SB && c != BREAK && c < 251)
            .prop_map(Piece::Command),
        Just(Piece::Break),
        (251u8..=254, any::<u8>()).prop_map(|(verb, option)| Piece::Negotiation(verb, option)),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Piece::Sub),
    ]
}

/// The wire bytes of `pieces`, the data the guest should get, and where the breaks fall.
fn encode(pieces: &[Piece]) -> (Vec<u8>, Vec<u8>, Vec<usize>) {
    let (mut wire, mut data, mut breaks) = (Vec::new(), Vec::new(), Vec::new());
    for p in pieces {
        match p {
            Piece::Data(d) => {
                escape_into(d, &mut wire);
                data.extend_from_slice(d);
            }
            Piece::Command(c) => wire.extend_from_slice(&[IAC, *c]),
            Piece::Break => {
                wire.extend_from_slice(&[IAC, BREAK]);
                breaks.push(data.len());
            }
            Piece::Negotiation(verb, option) => wire.extend_from_slice(&[IAC, *verb, *option]),
            Piece::Sub(payload) => {
                wire.extend_from_slice(&[IAC, SB]);
                escape_into(payload, &mut wire);
                wire.extend_from_slice(&[IAC, SE]);
            }
        }
    }
    (wire, data, breaks)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_input_filters_without_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
        filter_in_pieces(&input, &[]);
    }

    #[test]
    fn commands_never_reach_the_data(
        pieces in prop::collection::vec(piece(), 0..24),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let (wire, data, breaks) = encode(&pieces);
        prop_assert_eq!(filter_in_pieces(&wire, &cuts), (data, breaks));
    }

    #[test]
    fn escaped_data_comes_back_unchanged(
        data in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut wire = Vec::new();
        escape_into(&data, &mut wire);
        prop_assert_eq!(filter_in_pieces(&wire, &cuts), (data, Vec::new()));
    }

    #[test]
    fn read_boundaries_do_not_change_the_result(
        input in prop::collection::vec(
            prop_oneof![Just(IAC), Just(SB), Just(SE), Just(BREAK), 251u8..=254, any::<u8>()],
            0..256,
        ),
        cuts in prop::collection::vec(any::<usize>(), 1..8),
    ) {
        prop_assert_eq!(filter_in_pieces(&input, &cuts), filter_in_pieces(&input, &[]));
    }
}
