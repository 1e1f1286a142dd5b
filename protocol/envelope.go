package protocol

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// UpKind is the kind of an Upstream envelope.
type UpKind uint8

const (
	UpConnect    UpKind = 1 // a connection was accepted (Meta holds client metadata)
	UpMessage    UpKind = 2 // a client frame (Type, ID, Data)
	UpDisconnect UpKind = 3 // a connection closed (CloseCode)
)

// Upstream is the bus envelope edge → logic. Its key on the bus is the user id, so one user's
// envelopes stay in order.
type Upstream struct {
	Kind         UpKind
	Edge         string // edge id; replies for this connection go to the edge's topic
	Epoch        uint64 // edge epoch (a restarted edge has a new one)
	Conn         uint64 // connection id, unique within Edge/Epoch
	User         string
	Meta         map[string]string // UpConnect: client metadata (subprotocol, user agent, remote address, …)
	Type         string            // UpMessage: the frame's route
	ID           string            // UpMessage: the client's frame id ("" = no ack wanted)
	Data         []byte            // UpMessage: the frame's data (JSON)
	Traceparent  string            // W3C trace context of the hop that published it
	TimeUnixNano int64             // when the edge received the frame
	CloseCode    uint32            // UpDisconnect
}

// Upstream field numbers (protocol.proto).
const (
	fUpKind        = 1
	fUpEdge        = 2
	fUpEpoch       = 3
	fUpConn        = 4
	fUpUser        = 5
	fUpMeta        = 6
	fUpType        = 7
	fUpID          = 8
	fUpData        = 9
	fUpTraceparent = 10
	fUpTime        = 11
	fUpCloseCode   = 12
)

// AppendUpstream appends the protobuf encoding of u to dst.
func AppendUpstream(dst []byte, u *Upstream) []byte {
	dst = appendVarintField(dst, fUpKind, uint64(u.Kind))
	dst = appendStringField(dst, fUpEdge, u.Edge)
	dst = appendVarintField(dst, fUpEpoch, u.Epoch)
	dst = appendVarintField(dst, fUpConn, u.Conn)
	dst = appendStringField(dst, fUpUser, u.User)
	dst = appendMap(dst, fUpMeta, u.Meta)
	dst = appendStringField(dst, fUpType, u.Type)
	dst = appendStringField(dst, fUpID, u.ID)
	dst = appendBytesField(dst, fUpData, u.Data)
	dst = appendStringField(dst, fUpTraceparent, u.Traceparent)
	dst = appendVarintField(dst, fUpTime, uint64(u.TimeUnixNano))
	return appendVarintField(dst, fUpCloseCode, uint64(u.CloseCode))
}

// AppendUpstreamFrame appends an UpMessage envelope for client frame f straight from its
// decoded bytes, without building an Upstream (the edge's per-frame path: no allocation).
func AppendUpstreamFrame(dst []byte, edge string, epoch, conn uint64, user string, f *Frame, traceparent string, unixNano int64) []byte {
	dst = appendVarintField(dst, fUpKind, uint64(UpMessage))
	dst = appendStringField(dst, fUpEdge, edge)
	dst = appendVarintField(dst, fUpEpoch, epoch)
	dst = appendVarintField(dst, fUpConn, conn)
	dst = appendStringField(dst, fUpUser, user)
	dst = appendBytesField(dst, fUpType, f.Type)
	dst = appendBytesField(dst, fUpID, f.ID)
	dst = appendBytesField(dst, fUpData, f.Data)
	dst = appendStringField(dst, fUpTraceparent, traceparent)
	return appendVarintField(dst, fUpTime, uint64(unixNano))
}

// DecodeUpstream decodes an Upstream envelope. It copies what it keeps.
func DecodeUpstream(b []byte, u *Upstream) error {
	*u = Upstream{}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case fUpKind:
			u.Kind = UpKind(x)
		case fUpEdge:
			u.Edge = string(v)
		case fUpEpoch:
			u.Epoch = x
		case fUpConn:
			u.Conn = x
		case fUpUser:
			u.User = string(v)
		case fUpMeta:
			if typ != protowire.BytesType {
				return ErrMalformed
			}
			if u.Meta == nil {
				u.Meta = make(map[string]string)
			}
			return decodeMapEntry(v, u.Meta)
		case fUpType:
			u.Type = string(v)
		case fUpID:
			u.ID = string(v)
		case fUpData:
			if len(v) > 0 {
				u.Data = append([]byte(nil), v...)
			}
		case fUpTraceparent:
			u.Traceparent = string(v)
		case fUpTime:
			u.TimeUnixNano = int64(x)
		case fUpCloseCode:
			u.CloseCode = uint32(x)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if u.Kind < UpConnect || u.Kind > UpDisconnect {
		return ErrMalformed
	}
	return nil
}

// DownKind is the kind of a Downstream envelope.
type DownKind uint8

const (
	DownDeliver DownKind = 1 // write Frame to the targets
	DownJoin    DownKind = 2 // join the targets to Rooms
	DownLeave   DownKind = 3 // remove the targets from Rooms
	DownClose   DownKind = 4 // close the targets' connections with Code and Reason (kick)
)

// TargetKind says whom a Downstream envelope addresses on the receiving edge.
type TargetKind uint8

const (
	TargetConns TargetKind = 1 // the connections Conns (of edge epoch Epoch, when non-zero)
	TargetUsers TargetKind = 2 // every local connection of the users Users
	TargetRoom  TargetKind = 3 // every local member of Room
	TargetAll   TargetKind = 4 // every local connection
)

// Priority is a delivery's class for load shedding. Only PriorityNormal may be shed.
type Priority uint8

const (
	PriorityNormal    Priority = 0 // ordinary chatter: may be shed or merged under pressure
	PriorityEcho      Priority = 1 // the sender's own echo
	PriorityPaid      Priority = 2 // paid messages (e.g. super chat)
	PriorityModerator Priority = 3 // moderator messages
	PrioritySystem    Priority = 4 // system notices, control
)

// Sheddable reports whether deliveries of class p may be dropped under pressure.
func (p Priority) Sheddable() bool { return p == PriorityNormal }

// Downstream is the bus envelope logic → edge, published once per edge that holds a target.
type Downstream struct {
	Kind         DownKind
	Target       TargetKind
	Epoch        uint64   // TargetConns: the edge epoch the ids belong to; 0 = current
	Conns        []uint64 // TargetConns
	Users        []string // TargetUsers
	Room         string   // TargetRoom
	ExcludeConn  uint64   // skip this connection (e.g. the sender, who gets its own echo)
	Rooms        []string // DownJoin / DownLeave
	Frame        ServerFrame
	Priority     Priority
	Code         uint32 // DownClose: the close code
	Reason       string // DownClose: the close reason
	Traceparent  string // W3C trace context of the hop that published it
	TimeUnixNano int64  // when the originating client frame reached its edge (latency)
}

// Downstream field numbers (protocol.proto).
const (
	fDownKind        = 1
	fDownTarget      = 2
	fDownEpoch       = 3
	fDownConns       = 4
	fDownUsers       = 5
	fDownRoom        = 6
	fDownExclude     = 7
	fDownFrame       = 8
	fDownPriority    = 9
	fDownCode        = 10
	fDownReason      = 11
	fDownTraceparent = 12
	fDownTime        = 13
	fDownRooms       = 14
)

// AppendDownstream appends the protobuf encoding of d to dst.
func AppendDownstream(dst []byte, d *Downstream) []byte {
	dst = appendVarintField(dst, fDownKind, uint64(d.Kind))
	dst = appendVarintField(dst, fDownTarget, uint64(d.Target))
	dst = appendVarintField(dst, fDownEpoch, d.Epoch)
	if len(d.Conns) > 0 {
		n := 0
		for _, c := range d.Conns {
			n += protowire.SizeVarint(c)
		}
		dst = protowire.AppendTag(dst, fDownConns, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(n))
		for _, c := range d.Conns {
			dst = protowire.AppendVarint(dst, c)
		}
	}
	for _, u := range d.Users {
		dst = protowire.AppendTag(dst, fDownUsers, protowire.BytesType)
		dst = protowire.AppendString(dst, u)
	}
	dst = appendStringField(dst, fDownRoom, d.Room)
	dst = appendVarintField(dst, fDownExclude, d.ExcludeConn)
	if d.Frame.Type != "" {
		dst = protowire.AppendTag(dst, fDownFrame, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(serverFrameSize(&d.Frame)))
		dst = protoCodec{}.AppendServerFrame(dst, &d.Frame) // not through the Codec interface: d does not escape
	}
	dst = appendVarintField(dst, fDownPriority, uint64(d.Priority))
	dst = appendVarintField(dst, fDownCode, uint64(d.Code))
	dst = appendStringField(dst, fDownReason, d.Reason)
	dst = appendStringField(dst, fDownTraceparent, d.Traceparent)
	dst = appendVarintField(dst, fDownTime, uint64(d.TimeUnixNano))
	for _, r := range d.Rooms {
		dst = protowire.AppendTag(dst, fDownRooms, protowire.BytesType)
		dst = protowire.AppendString(dst, r)
	}
	return dst
}

func serverFrameSize(f *ServerFrame) int {
	n := 0
	str := func(num protowire.Number, l int) {
		if l > 0 {
			n += protowire.SizeTag(num) + protowire.SizeBytes(l)
		}
	}
	str(fServerType, len(f.Type))
	str(fServerID, len(f.ID))
	if f.Code != 0 {
		n += protowire.SizeTag(fServerCode) + protowire.SizeVarint(uint64(f.Code))
	}
	str(fServerMessage, len(f.Message))
	str(fServerData, len(f.Data))
	return n
}

// DecodeDownstream decodes a Downstream envelope. It copies what it keeps.
func DecodeDownstream(b []byte, d *Downstream) error {
	*d = Downstream{}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case fDownKind:
			d.Kind = DownKind(x)
		case fDownTarget:
			d.Target = TargetKind(x)
		case fDownEpoch:
			d.Epoch = x
		case fDownConns:
			if typ == protowire.VarintType {
				d.Conns = append(d.Conns, x)
				return nil
			}
			for len(v) > 0 {
				c, n := protowire.ConsumeVarint(v)
				if n < 0 {
					return ErrMalformed
				}
				d.Conns = append(d.Conns, c)
				v = v[n:]
			}
		case fDownUsers:
			d.Users = append(d.Users, string(v))
		case fDownRoom:
			d.Room = string(v)
		case fDownExclude:
			d.ExcludeConn = x
		case fDownFrame:
			if typ != protowire.BytesType {
				return ErrMalformed
			}
			return protoCodec{}.DecodeServerFrame(v, &d.Frame)
		case fDownPriority:
			d.Priority = Priority(x)
		case fDownCode:
			d.Code = uint32(x)
		case fDownReason:
			d.Reason = string(v)
		case fDownTraceparent:
			d.Traceparent = string(v)
		case fDownTime:
			d.TimeUnixNano = int64(x)
		case fDownRooms:
			d.Rooms = append(d.Rooms, string(v))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if d.Kind < DownDeliver || d.Kind > DownClose || d.Target < TargetConns || d.Target > TargetAll {
		return ErrMalformed
	}
	if d.Kind == DownDeliver && d.Frame.Type == "" {
		return ErrMissingType
	}
	return nil
}

func appendMap(dst []byte, num protowire.Number, m map[string]string) []byte {
	for k, v := range m {
		size := protowire.SizeTag(1) + protowire.SizeBytes(len(k)) + protowire.SizeTag(2) + protowire.SizeBytes(len(v))
		dst = protowire.AppendTag(dst, num, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendString(dst, k)
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendString(dst, v)
	}
	return dst
}

func decodeMapEntry(b []byte, m map[string]string) error {
	var k, v string
	err := walk(b, func(num protowire.Number, typ protowire.Type, val []byte, _ uint64) error {
		switch num {
		case 1:
			k = string(val)
		case 2:
			v = string(val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	m[k] = v
	return nil
}
