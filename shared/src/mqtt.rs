//! Just enough of the MQTT 3.1.1 and 5 wire format (OASIS standards, 2014 and 2019) for the
//! edge's gate (`wardlink-edge`'s `broker`), which every device connects to: framing any packet; reading CONNECT, PUBLISH, PUBREL and SUBSCRIBE; writing what the
//! gate answers itself (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, PINGRESP, DISCONNECT) and
//! the CONNECT it opens a relay to rumqttd with.
//!
//! The other packets of a subscribing device (UNSUBSCRIBE, and its acknowledgements of what
//! it receives) pass through untouched to rumqttd, which parses them fully.

/// Packet types (high nibble of the first byte).
pub const CONNECT: u8 = 1;
/// CONNACK.
pub const CONNACK: u8 = 2;
/// PUBLISH.
pub const PUBLISH: u8 = 3;
/// PUBACK.
pub const PUBACK: u8 = 4;
/// PUBREC.
pub const PUBREC: u8 = 5;
/// PUBREL.
pub const PUBREL: u8 = 6;
/// PUBCOMP.
pub const PUBCOMP: u8 = 7;
/// SUBSCRIBE.
pub const SUBSCRIBE: u8 = 8;
/// UNSUBSCRIBE.
pub const UNSUBSCRIBE: u8 = 10;
/// PINGREQ.
pub const PINGREQ: u8 = 12;
/// PINGRESP.
pub const PINGRESP: u8 = 13;
/// DISCONNECT.
pub const DISCONNECT: u8 = 14;
/// AUTH (MQTT 5 enhanced authentication, which the edge does not offer).
pub const AUTH: u8 = 15;

/// MQTT 5 properties a CONNECT may carry (session expiry, receive maximum, maximum packet
/// size, topic alias maximum, request response/problem information, user property,
/// authentication method and data).
const CONNECT_PROPERTIES: [u8; 9] = [0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16];
/// Properties of a will (delay, payload format, expiry, content type, response topic,
/// correlation data, user property).
const WILL_PROPERTIES: [u8; 7] = [0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26];
/// Properties of a PUBLISH from a client. The subscription identifier (0x0b) is for the
/// server's PUBLISH only, and rumqttd 0.20 miscounts its length.
const PUBLISH_PROPERTIES: [u8; 7] = [0x01, 0x02, 0x23, 0x08, 0x09, 0x26, 0x03];
/// Properties of a SUBSCRIBE (read to be skipped: the gate re-encodes a SUBSCRIBE without
/// them, because rumqttd 0.20 miscounts the subscription identifier's length).
const SUBSCRIBE_PROPERTIES: [u8; 2] = [0x0b, 0x26];

/// Protocol level of MQTT 3.1.1.
pub const LEVEL_V4: u8 = 4;
/// Protocol level of MQTT 5.
pub const LEVEL_V5: u8 = 5;

/// CONNACK codes, by protocol level: (3.1.1, 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuse {
    /// Unsupported protocol level (3.1.1: 0x01; 5: 0x84).
    Protocol,
    /// Client identifier not valid (0x02; 0x85).
    ClientId,
    /// Bad user name or password (0x04; 0x86).
    Credentials,
    /// Not authorised (0x05; 0x87).
    NotAuthorized,
    /// Server unavailable / busy (0x03; 0x89).
    Busy,
}

impl Refuse {
    fn code(self, level: u8) -> u8 {
        let v5 = level == LEVEL_V5;
        match self {
            Refuse::Protocol => [0x01, 0x84][usize::from(v5)],
            Refuse::ClientId => [0x02, 0x85][usize::from(v5)],
            Refuse::Credentials => [0x04, 0x86][usize::from(v5)],
            Refuse::NotAuthorized => [0x05, 0x87][usize::from(v5)],
            Refuse::Busy => [0x03, 0x89][usize::from(v5)],
        }
    }
}

/// A packet that breaks the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The remaining-length field runs over four bytes.
    #[error("malformed remaining length")]
    Length,
    /// The packet is larger than the edge admits.
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A field runs past the end of the packet.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A string is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// Not the protocol name `MQTT`.
    #[error("not an MQTT CONNECT")]
    NotMqtt,
    /// An MQTT 5 property not allowed in this packet.
    #[error("property 0x{0:02x} not allowed here")]
    Property(u8),
    /// A packet the gate does not relay (a second CONNECT).
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    /// A topic filter with a wildcard inside a level, or `#` not last.
    #[error("malformed topic filter")]
    Filter,
}

/// Where a complete packet ends in `buf`, if it is all there: `Some(total length)`.
/// Refuses packets longer than `max` bytes before they are buffered.
pub fn frame(buf: &[u8], max: usize) -> Result<Option<usize>, PacketError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 2 + i + remaining;
            if total > max {
                return Err(PacketError::TooLarge(total));
            }
            return Ok((buf.len() >= total).then_some(total));
        }
    }
    Err(PacketError::Length)
}

/// The packet type of a framed packet.
pub fn kind(packet: &[u8]) -> u8 {
    packet.first().map_or(0, |b| b >> 4)
}

/// A cursor over one packet's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts after the fixed header.
    fn body(packet: &'a [u8]) -> Result<Self, PacketError> {
        let mut pos = 1;
        while packet.get(pos).ok_or(PacketError::Truncated("header"))? & 0x80 != 0 {
            pos += 1;
        }
        Ok(Reader {
            buf: packet,
            pos: pos + 1,
        })
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PacketError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(PacketError::Truncated(what))?;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(PacketError::Truncated(what))?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PacketError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PacketError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn binary(&mut self, what: &'static str) -> Result<&'a [u8], PacketError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    fn string(&mut self, what: &'static str) -> Result<&'a str, PacketError> {
        std::str::from_utf8(self.binary(what)?).map_err(|_| PacketError::Utf8(what))
    }

    fn varint(&mut self, what: &'static str) -> Result<usize, PacketError> {
        let mut value = 0usize;
        for i in 0..4 {
            let b = self.u8(what)?;
            value |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PacketError::Length)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Reads an MQTT 5 property block, returning the few the gate acts on. Properties outside
    /// `allowed` (the ones the standard permits in this packet, and that rumqttd reads the
    /// same way) are refused: a block that two parsers read differently would let the gate
    /// check one thing and the broker act on another.
    fn properties(&mut self, allowed: &[u8]) -> Result<Props, PacketError> {
        let len = self.varint("properties")?;
        let block = self.take(len, "properties")?;
        let mut r = Reader { buf: block, pos: 0 };
        let mut props = Props::default();
        while !r.at_end() {
            let id = r.u8("property")?;
            if !allowed.contains(&id) {
                return Err(PacketError::Property(id));
            }
            match id {
                // Byte.
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => {
                    r.take(1, "property")?;
                }
                // Two-byte integer; 0x23 is the topic alias.
                0x13 | 0x21 | 0x22 => {
                    r.take(2, "property")?;
                }
                0x23 => props.alias = Some(r.u16("topic alias")?),
                // Four-byte integer; 0x11 is the session expiry interval.
                0x11 => {
                    let b = r.take(4, "session expiry")?;
                    props.session_expiry = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
                0x02 | 0x18 | 0x27 => {
                    r.take(4, "property")?;
                }
                // UTF-8 string.
                0x03 | 0x08 | 0x12 | 0x15 | 0x1a | 0x1c | 0x1f => {
                    r.string("property")?;
                }
                // Binary data.
                0x09 | 0x16 => {
                    r.binary("property")?;
                }
                // Variable byte integer.
                0x0b => {
                    r.varint("property")?;
                }
                // String pair.
                0x26 => {
                    r.string("user property")?;
                    r.string("user property")?;
                }
                other => return Err(PacketError::Property(other)),
            }
        }
        Ok(props)
    }
}

/// The MQTT 5 properties the gate acts on.
#[derive(Debug, Default, Clone, Copy)]
struct Props {
    alias: Option<u16>,
    session_expiry: Option<u32>,
}

/// What the gate needs from a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// 4 (3.1.1) or 5; other levels are reported too, for a clear refusal.
    pub level: u8,
    /// The client identifier.
    pub client_id: String,
    /// The will topic, if a will is set.
    pub will_topic: Option<String>,
    /// The will's payload.
    pub will_payload: Vec<u8>,
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<Vec<u8>>,
    /// Clean session (3.1.1) or clean start (5).
    pub clean: bool,
    /// Keep alive, seconds (0: none).
    pub keep_alive: u16,
    /// MQTT 5 session expiry interval, seconds (0 unless set).
    pub session_expiry: u32,
}

impl Connect {
    /// Whether the device asks for a session that outlives the connection: 3.1.1 without
    /// clean session; 5 with a session expiry (whatever its Clean Start, which says only
    /// whether an existing session is resumed: [`Connect::clean`]).
    pub fn persistent(&self) -> bool {
        if self.level == LEVEL_V5 {
            self.session_expiry > 0
        } else {
            !self.clean
        }
    }
}

/// Reads a CONNECT packet (as framed by [`frame`]).
pub fn parse_connect(packet: &[u8]) -> Result<Connect, PacketError> {
    let mut r = Reader::body(packet)?;
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    if name != b"MQTT" {
        // MQTT 3.1 ("MQIsdp", level 3) is refused with a protocol error, which needs the level.
        if name == b"MQIsdp" {
            return Ok(Connect {
                level,
                client_id: String::new(),
                will_topic: None,
                will_payload: Vec::new(),
                username: None,
                password: None,
                clean: true,
                keep_alive: 0,
                session_expiry: 0,
            });
        }
        return Err(PacketError::NotMqtt);
    }
    let flags = r.u8("connect flags")?;
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    // MQTT 3.1.1 §3.1.2.3 and 5 §3.1.2.3: the reserved bit is 0; without a will, its QoS
    // and retain bits are 0; a will's QoS is at most 2.
    if flags & 0x01 != 0 || will_qos == 3 || (!will && flags & 0x38 != 0) {
        return Err(PacketError::Unexpected("connect flags"));
    }
    let keep_alive = r.u16("keep alive")?;
    let v5 = level == LEVEL_V5;
    let props = if v5 {
        r.properties(&CONNECT_PROPERTIES)?
    } else {
        Props::default()
    };
    let client_id = r.string("client id")?.to_owned();
    let mut will_topic = None;
    let mut will_payload = Vec::new();
    if flags & 0x04 != 0 {
        if v5 {
            r.properties(&WILL_PROPERTIES)?;
        }
        will_topic = Some(r.string("will topic")?.to_owned());
        will_payload = r.binary("will payload")?.to_vec();
    }
    let username = if flags & 0x80 != 0 {
        Some(r.string("user name")?.to_owned())
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(r.binary("password")?.to_vec())
    } else {
        None
    };
    if !r.at_end() {
        return Err(PacketError::Unexpected("bytes after the CONNECT payload"));
    }
    Ok(Connect {
        level,
        client_id,
        will_topic,
        will_payload,
        username,
        password,
        clean: flags & 0x02 != 0,
        keep_alive,
        session_expiry: props.session_expiry.unwrap_or(0),
    })
}

/// The CONNECT the gate opens a relay to rumqttd with, for a subscribing device: its client
/// id, the gate's secret, no will (the gate publishes wills itself), and the session kept or
/// not as the device asked.
pub fn encode_connect(level: u8, client_id: &str, secret: &[u8], persistent: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + client_id.len() + secret.len());
    put_binary(&mut body, b"MQTT");
    body.push(level);
    let clean = if persistent && level == LEVEL_V4 {
        0
    } else {
        0x02
    };
    body.push(0xc0 | clean);
    body.extend_from_slice(&RELAY_KEEP_ALIVE_S.to_be_bytes());
    if level == LEVEL_V5 {
        if persistent {
            // Session expiry: as long as the broker keeps it (0xffffffff: never expires).
            body.extend_from_slice(&[0x05, 0x11, 0xff, 0xff, 0xff, 0xff]);
        } else {
            body.push(0x00);
        }
    }
    put_binary(&mut body, client_id.as_bytes());
    put_binary(&mut body, client_id.as_bytes());
    put_binary(&mut body, secret);
    with_header(0x10, &body)
}

/// Keep alive of a relay connection; the gate pings rumqttd at half of it.
pub const RELAY_KEEP_ALIVE_S: u16 = 60;

/// What the gate needs from a PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// Topic name (empty in MQTT 5 when a topic alias stands for it).
    pub topic: &'a str,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Packet identifier (QoS 1 and 2).
    pub id: u16,
    /// MQTT 5 topic alias.
    pub alias: Option<u16>,
    /// The application message.
    pub payload: &'a [u8],
}

/// Reads a PUBLISH packet.
pub fn parse_publish(packet: &[u8], level: u8) -> Result<Publish<'_>, PacketError> {
    let qos = packet.first().map_or(0, |b| (b >> 1) & 0x03);
    if qos == 3 {
        return Err(PacketError::Unexpected("QoS 3"));
    }
    let mut r = Reader::body(packet)?;
    let topic = r.string("topic")?;
    // A topic name never holds a wildcard (§4.7.1).
    if topic.contains(['+', '#']) {
        return Err(PacketError::Unexpected("wildcard in a topic name"));
    }
    let id = if qos > 0 { r.u16("packet id")? } else { 0 };
    let alias = if level == LEVEL_V5 {
        r.properties(&PUBLISH_PROPERTIES)?.alias
    } else {
        None
    };
    let payload = packet.get(r.pos..).unwrap_or_default();
    Ok(Publish {
        topic,
        qos,
        id,
        alias,
        payload,
    })
}

/// The packet identifier of a PUBACK, PUBREC, PUBREL or PUBCOMP.
pub fn packet_id(packet: &[u8]) -> Result<u16, PacketError> {
    Reader::body(packet)?.u16("packet id")
}

/// How the gate answers a device's PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// QoS 1: PUBACK.
    Ack,
    /// QoS 2: PUBREC (the device then sends PUBREL, answered with PUBCOMP).
    Received,
}

/// The acknowledgement of a device's PUBLISH `id`. `refused` (MQTT 5 only, reason 0x99
/// "payload format invalid") tells the device its payload was not accepted; 3.1.1 has no way
/// to say so.
pub fn publish_reply(level: u8, reply: Reply, id: u16, refused: bool, out: &mut Vec<u8>) {
    let first = match reply {
        Reply::Ack => 0x40,
        Reply::Received => 0x50,
    };
    let [hi, lo] = id.to_be_bytes();
    if refused && level == LEVEL_V5 {
        out.extend_from_slice(&[first, 0x03, hi, lo, 0x99]);
    } else {
        out.extend_from_slice(&[first, 0x02, hi, lo]);
    }
}

/// PUBCOMP for a device's PUBREL `id`.
pub fn pubcomp(id: u16) -> [u8; 4] {
    let [hi, lo] = id.to_be_bytes();
    [0x70, 0x02, hi, lo]
}

/// PINGRESP.
pub const PINGRESP_PACKET: [u8; 2] = [0xd0, 0x00];
/// PINGREQ, sent by the gate on a relay.
pub const PINGREQ_PACKET: [u8; 2] = [0xc0, 0x00];

/// What the gate's CONNACK tells an MQTT 5 device.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Receive maximum: QoS 1 and 2 publishes the device may have unacknowledged.
    pub receive_maximum: u16,
    /// Topic aliases the device may use.
    pub topic_alias_maximum: u16,
    /// Largest packet accepted.
    pub maximum_packet_size: u32,
}

/// A CONNACK accepting the connection.
pub fn connack_accepted(level: u8, session_present: bool, limits: Limits) -> Vec<u8> {
    let flags = u8::from(session_present);
    if level != LEVEL_V5 {
        return vec![0x20, 0x02, flags, 0x00];
    }
    let mut props = Vec::with_capacity(20);
    props.push(0x21);
    props.extend_from_slice(&limits.receive_maximum.to_be_bytes());
    props.push(0x22);
    props.extend_from_slice(&limits.topic_alias_maximum.to_be_bytes());
    props.push(0x27);
    props.extend_from_slice(&limits.maximum_packet_size.to_be_bytes());
    // Retained messages are not kept for devices' publishes; subscription identifiers and
    // shared subscriptions are not offered.
    props.extend_from_slice(&[0x25, 0x00, 0x29, 0x00, 0x2a, 0x00]);
    let mut body = vec![flags, 0x00];
    put_varint(&mut body, props.len());
    body.extend_from_slice(&props);
    with_header(0x20, &body)
}

/// A SUBSCRIBE: its packet id and topic filters with their option bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// Packet identifier.
    pub id: u16,
    /// Topic filters, in order.
    pub filters: Vec<&'a str>,
    /// Each filter's subscription options byte.
    pub options: Vec<u8>,
}

/// Reads a SUBSCRIBE packet.
pub fn parse_subscribe(packet: &[u8], level: u8) -> Result<Subscribe<'_>, PacketError> {
    let mut r = Reader::body(packet)?;
    let id = r.u16("packet id")?;
    if level == LEVEL_V5 {
        r.properties(&SUBSCRIBE_PROPERTIES)?;
    }
    let mut filters = Vec::new();
    let mut options = Vec::new();
    while !r.at_end() {
        let filter = r.string("topic filter")?;
        if !well_formed_filter(filter) {
            return Err(PacketError::Filter);
        }
        filters.push(filter);
        let o = r.u8("subscription options")?;
        // QoS at most 2; 3.1.1 reserves the other six bits, 5 the top two and retain
        // handling 3 (§3.8.3.1).
        let reserved = if level == LEVEL_V5 {
            o & 0xc0 != 0 || (o >> 4) & 0x03 == 3
        } else {
            o & 0xfc != 0
        };
        if o & 0x03 == 3 || reserved {
            return Err(PacketError::Unexpected("subscription options"));
        }
        options.push(o);
    }
    if filters.is_empty() {
        return Err(PacketError::Truncated("topic filter"));
    }
    Ok(Subscribe {
        id,
        filters,
        options,
    })
}

/// `+` and `#` only as whole levels, `#` only last, no NUL (MQTT 5 §4.7.1).
fn well_formed_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && !filter.contains('\0')
        && levels.iter().enumerate().all(|(i, l)| {
            (*l == "#" && i == levels.len() - 1)
                || *l == "+"
                || !(l.contains('#') || l.contains('+'))
        })
}

/// The SUBSCRIBE the gate relays: the same packet id, filters and options, without
/// properties, so that rumqttd cannot read it differently from the gate.
pub fn encode_subscribe(level: u8, sub: &Subscribe<'_>) -> Vec<u8> {
    let mut body = sub.id.to_be_bytes().to_vec();
    if level == LEVEL_V5 {
        body.push(0x00);
    }
    for (filter, options) in sub.filters.iter().zip(&sub.options) {
        put_binary(&mut body, filter.as_bytes());
        body.push(*options);
    }
    with_header(0x82, &body)
}

/// A CONNACK refusing the connection.
pub fn connack(level: u8, refuse: Refuse) -> Vec<u8> {
    if level == LEVEL_V5 {
        // Session present 0, reason, empty properties.
        vec![0x20, 0x03, 0x00, refuse.code(level), 0x00]
    } else {
        vec![0x20, 0x02, 0x00, refuse.code(level)]
    }
}

/// A SUBACK refusing every filter of a SUBSCRIBE (3.1.1: 0x80 failure; 5: 0x87 not
/// authorised).
pub fn suback_refused(level: u8, id: u16, filters: usize) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if level == LEVEL_V5 {
        body.push(0x00);
    }
    let code = if level == LEVEL_V5 { 0x87 } else { 0x80 };
    body.extend(std::iter::repeat_n(code, filters));
    with_header(0x90, &body)
}

/// An MQTT 5 DISCONNECT with reason 0x87 (not authorised); 3.1.1 has no server DISCONNECT.
pub fn disconnect_not_authorized(level: u8) -> Vec<u8> {
    if level == LEVEL_V5 {
        vec![0xe0, 0x02, 0x87, 0x00]
    } else {
        Vec::new()
    }
}

fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    // Callers pass strings that came out of a u16-length field, or the gate's own secret.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n & 0x7f) as u8;
        n >>= 7;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn with_header(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT as a client library writes it.
    fn connect(level: u8, will: Option<&str>, user: Option<&str>, pass: Option<&[u8]>) -> Vec<u8> {
        let mut body = Vec::new();
        put_binary(&mut body, b"MQTT");
        body.push(level);
        let mut flags = 0x02;
        if will.is_some() {
            flags |= 0x04;
        }
        if user.is_some() {
            flags |= 0x80;
        }
        if pass.is_some() {
            flags |= 0x40;
        }
        body.push(flags);
        body.extend_from_slice(&60u16.to_be_bytes());
        if level == LEVEL_V5 {
            // Session expiry interval and a user property.
            let props = [
                &[0x11, 0, 0, 0, 10][..],
                &[0x26, 0, 1, b'k', 0, 1, b'v'][..],
            ]
            .concat();
            body.push(props.len() as u8);
            body.extend_from_slice(&props);
        }
        put_binary(&mut body, b"mon-1");
        if let Some(topic) = will {
            if level == LEVEL_V5 {
                body.extend_from_slice(&[0x05, 0x18, 0, 0, 0, 5]);
            }
            put_binary(&mut body, topic.as_bytes());
            put_binary(&mut body, b"gone");
        }
        if let Some(u) = user {
            put_binary(&mut body, u.as_bytes());
        }
        if let Some(p) = pass {
            put_binary(&mut body, p);
        }
        with_header(0x10, &body)
    }

    #[test]
    fn framing_waits_for_the_whole_packet_and_refuses_oversize() {
        let p = with_header(0x30, &vec![7u8; 300]);
        assert_eq!(frame(&p[..1], 1000), Ok(None));
        assert_eq!(frame(&p[..2], 1000), Ok(None));
        assert_eq!(frame(&p[..100], 1000), Ok(None));
        assert_eq!(frame(&p, 1000), Ok(Some(303)));
        let mut two = p.clone();
        two.extend_from_slice(&p);
        assert_eq!(frame(&two, 1000), Ok(Some(303)));
        assert_eq!(frame(&p[..3], 100), Err(PacketError::TooLarge(303)));
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 1 << 30),
            Err(PacketError::Length)
        );
    }

    #[test]
    fn connect_fields_are_read_in_both_versions() {
        for level in [LEVEL_V4, LEVEL_V5] {
            let p = connect(
                level,
                Some("patients/p1/status"),
                Some("mon-1"),
                Some(b"secret"),
            );
            let c = parse_connect(&p).unwrap();
            assert_eq!(c.level, level);
            assert_eq!(c.client_id, "mon-1");
            assert_eq!(c.will_topic.as_deref(), Some("patients/p1/status"));
            assert_eq!(c.username.as_deref(), Some("mon-1"));
            assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
            let bare = parse_connect(&connect(level, None, None, None)).unwrap();
            assert_eq!((bare.username, bare.password), (None, None));
        }
    }

    #[test]
    fn the_relays_connect_reads_back_as_written() {
        for level in [LEVEL_V4, LEVEL_V5] {
            for persistent in [false, true] {
                let p = encode_connect(level, "mon-1", b"internal", persistent);
                assert_eq!(frame(&p, 1 << 20), Ok(Some(p.len())));
                let c = parse_connect(&p).unwrap();
                assert_eq!(c.level, level);
                assert_eq!(c.client_id, "mon-1");
                assert_eq!(c.username.as_deref(), Some("mon-1"));
                assert_eq!(c.password.as_deref(), Some(&b"internal"[..]));
                assert_eq!(c.will_topic, None);
                assert_eq!(c.keep_alive, RELAY_KEEP_ALIVE_S);
                assert_eq!(c.persistent(), persistent, "level {level}");
            }
        }
    }

    #[test]
    fn connect_session_flags() {
        let v4 = parse_connect(&connect(LEVEL_V4, None, None, None)).unwrap();
        assert!(v4.clean && !v4.persistent() && v4.keep_alive == 60);
        // The test CONNECT carries a session expiry of 10 s.
        let v5 = parse_connect(&connect(LEVEL_V5, None, None, None)).unwrap();
        assert!(v5.clean && v5.persistent() && v5.session_expiry == 10);
        let mut reserved = connect(LEVEL_V4, None, None, None);
        reserved[9] |= 0x01;
        assert!(parse_connect(&reserved).is_err());
    }

    #[test]
    fn answers_are_well_formed() {
        let limits = Limits {
            receive_maximum: 64,
            topic_alias_maximum: 16,
            maximum_packet_size: 1 << 16,
        };
        assert_eq!(
            connack_accepted(LEVEL_V4, true, limits),
            vec![0x20, 0x02, 0x01, 0x00]
        );
        let v5 = connack_accepted(LEVEL_V5, false, limits);
        assert_eq!(frame(&v5, 1 << 20), Ok(Some(v5.len())));
        assert_eq!(&v5[2..5], &[0x00, 0x00, 17]);
        let mut out = Vec::new();
        publish_reply(LEVEL_V4, Reply::Ack, 0x0102, true, &mut out);
        publish_reply(LEVEL_V5, Reply::Received, 7, true, &mut out);
        publish_reply(LEVEL_V5, Reply::Ack, 8, false, &mut out);
        assert_eq!(
            out,
            vec![
                0x40, 2, 1, 2, // 3.1.1 cannot refuse
                0x50, 3, 0, 7, 0x99, // payload format invalid
                0x40, 2, 0, 8
            ]
        );
        assert_eq!(packet_id(&[0x62, 0x02, 0x00, 0x09]), Ok(9));
        assert_eq!(pubcomp(9), [0x70, 0x02, 0x00, 0x09]);
    }

    #[test]
    fn publish_topic_qos_and_alias() {
        let mut body = Vec::new();
        put_binary(&mut body, b"patients/p1/vitals");
        body.extend_from_slice(&7u16.to_be_bytes());
        body.extend_from_slice(b"{}");
        let p = with_header(0x32, &body);
        let got = parse_publish(&p, LEVEL_V4).unwrap();
        assert_eq!(
            (got.topic, got.qos, got.id, got.alias, got.payload),
            ("patients/p1/vitals", 1, 7, None, &b"{}"[..])
        );

        let mut body = Vec::new();
        put_binary(&mut body, b"");
        // Properties: payload format indicator, topic alias 9; then one payload byte.
        body.extend_from_slice(&[0x05, 0x01, 0x01, 0x23, 0x00, 0x09, 0x00]);
        let p = with_header(0x30, &body);
        let got = parse_publish(&p, LEVEL_V5).unwrap();
        assert_eq!(
            (got.topic, got.qos, got.alias, got.payload),
            ("", 0, Some(9), &[0u8][..])
        );

        assert!(parse_publish(&[0x32, 0x01, 0x00], LEVEL_V4).is_err());
        assert!(
            parse_publish(&[0x36, 0x02, 0x00, 0x00], LEVEL_V4).is_err(),
            "QoS 3"
        );
    }

    #[test]
    fn subscribe_filters() {
        let mut body = 3u16.to_be_bytes().to_vec();
        put_binary(&mut body, b"#");
        body.push(1);
        put_binary(&mut body, b"patients/p1/vitals");
        body.push(0);
        let p = with_header(0x82, &body);
        let s = parse_subscribe(&p, LEVEL_V4).unwrap();
        assert_eq!(s.id, 3);
        assert_eq!(s.filters, vec!["#", "patients/p1/vitals"]);
        assert_eq!(s.options, vec![1, 0]);
        assert_eq!(encode_subscribe(LEVEL_V4, &s), p);
        assert_eq!(
            suback_refused(LEVEL_V4, 3, 2),
            vec![0x90, 0x04, 0x00, 0x03, 0x80, 0x80]
        );
        assert_eq!(
            suback_refused(LEVEL_V5, 3, 1),
            vec![0x90, 0x04, 0x00, 0x03, 0x00, 0x87]
        );
        assert!(parse_subscribe(&with_header(0x82, &[0, 1]), LEVEL_V4).is_err());
        for bad in ["a/#/b", "a/b#", "a+/b", "", "a/\0"] {
            let mut body = 3u16.to_be_bytes().to_vec();
            put_binary(&mut body, bad.as_bytes());
            body.push(0);
            assert_eq!(
                parse_subscribe(&with_header(0x82, &body), LEVEL_V4),
                Err(PacketError::Filter),
                "{bad:?}"
            );
        }
    }

    /// rumqttd 0.20 miscounts a subscription identifier's length, so properties that follow
    /// one are read by it as the start of the filter list. The gate relays a re-encoded
    /// SUBSCRIBE without properties, so what it checked is what the broker reads.
    #[test]
    fn subscribe_properties_never_reach_the_broker() {
        let mut body = 1u16.to_be_bytes().to_vec();
        body.extend_from_slice(&[0x06, 0x0b, 0x01, 0x0b, 0x01, 0x01, 0x00]);
        put_binary(&mut body, b"patients/p1/vitals");
        body.push(0);
        let p = with_header(0x82, &body);
        // (0x01 is not a SUBSCRIBE property: refused outright.)
        assert_eq!(
            parse_subscribe(&p, LEVEL_V5),
            Err(PacketError::Property(0x01))
        );

        let mut body = 1u16.to_be_bytes().to_vec();
        body.extend_from_slice(&[0x04, 0x0b, 0x01, 0x0b, 0x02]);
        put_binary(&mut body, b"patients/p1/vitals");
        body.push(1);
        let packet = with_header(0x82, &body);
        let s = parse_subscribe(&packet, LEVEL_V5).unwrap();
        let relayed = encode_subscribe(LEVEL_V5, &s);
        let mut want = 1u16.to_be_bytes().to_vec();
        want.push(0x00);
        put_binary(&mut want, b"patients/p1/vitals");
        want.push(1);
        assert_eq!(relayed, with_header(0x82, &want));
    }

    #[test]
    fn properties_outside_the_packets_list_are_refused() {
        let mut body = Vec::new();
        put_binary(&mut body, b"patients/p1/vitals");
        body.extend_from_slice(&[0x02, 0x0b, 0x01]);
        assert_eq!(
            parse_publish(&with_header(0x30, &body), LEVEL_V5),
            Err(PacketError::Property(0x0b))
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        // Every truncation of valid packets, and some noise.
        let valid = [
            connect(LEVEL_V5, Some("t"), Some("u"), Some(b"p")),
            connect(LEVEL_V4, None, Some("u"), Some(b"p")),
        ];
        for p in &valid {
            for cut in 0..p.len() {
                let _ = parse_connect(&p[..cut]);
                let _ = parse_publish(&p[..cut.max(1)], LEVEL_V5);
                let _ = parse_subscribe(&p[..cut.max(1)], LEVEL_V5);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (seed % 40) as usize + 1;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = frame(&bytes, 1 << 20);
            let _ = parse_connect(&bytes);
            let _ = parse_publish(&bytes, LEVEL_V5);
            let _ = parse_subscribe(&bytes, LEVEL_V4);
        }
    }
}
