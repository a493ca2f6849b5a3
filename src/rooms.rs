//! Rooms: which connections of a loop belong to which named room.
//!
//! A room is created by its first member and freed with its last. Joining
//! and leaving are O(1): a room keeps its members in a vector (fan-out walks
//! it), each connection keeps where it sits in the vector of each room it
//! joined, and leaving swaps the last member into the hole (updating that
//! member's position, found among its at most `--max-rooms-per-connection`
//! memberships). A connection that closes leaves all its rooms at once.
//!
//! Members are slab keys: the loop guarantees a key in a room is an open
//! connection, because a connection leaves its rooms before its slot is
//! freed.

use std::collections::HashMap;

use slab::Slab;

/// Longest room name accepted (a room is usually a request path).
pub const MAX_ROOM_NAME: usize = 1024;

/// A room, as long as it exists: a room freed and created again under the
/// same name is another room (the generation differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomId {
    index: u32,
    generation: u32,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    /// `--max-rooms` rooms exist already.
    TooManyRooms,
    /// The connection is in `--max-rooms-per-connection` rooms already.
    TooManyForConnection,
    /// The name is empty or longer than [`MAX_ROOM_NAME`].
    BadName,
}

impl RoomError {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomError::TooManyRooms => "too many rooms on this server",
            RoomError::TooManyForConnection => "this connection is in too many rooms",
            RoomError::BadName => "room name empty or too long",
        }
    }
}

/// What a successful [`Rooms::join`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    pub room: RoomId,
    /// The room did not exist: this is its first member.
    pub created: bool,
    /// The connection was a member already (nothing changed).
    pub already: bool,
}

#[derive(Debug)]
struct Room {
    name: Box<str>,
    generation: u32,
    /// Connection keys.
    members: Vec<u32>,
}

/// One membership of a connection: the room, and the member's index in it.
#[derive(Debug, Clone, Copy)]
struct Seat {
    room: u32,
    position: u32,
}

/// The rooms of one loop.
#[derive(Debug)]
pub struct Rooms {
    by_name: HashMap<Box<str>, u32>,
    rooms: Slab<Room>,
    /// Rooms created so far: the next room's generation.
    created: u32,
    /// By connection key: where that connection sits (empty for most keys
    /// in echo mode, and never allocated then).
    seats: Vec<Vec<Seat>>,
    memberships: usize,
    max_rooms: usize,
    max_per_connection: usize,
}

impl Rooms {
    pub fn new(max_rooms: usize, max_per_connection: usize) -> Self {
        Rooms {
            by_name: HashMap::new(),
            rooms: Slab::new(),
            created: 0,
            seats: Vec::new(),
            memberships: 0,
            max_rooms,
            max_per_connection,
        }
    }

    /// Rooms that exist (have members).
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Memberships, all rooms together.
    pub fn memberships(&self) -> usize {
        self.memberships
    }

    /// The room called `name`, if it has members.
    pub fn find(&self, name: &str) -> Option<RoomId> {
        let index = *self.by_name.get(name)?;
        Some(RoomId { index, generation: self.rooms[index as usize].generation })
    }

    /// The members of `room` (connection keys), or `None` if it is gone.
    #[inline]
    pub fn members(&self, room: RoomId) -> Option<&[u32]> {
        self.room(room).map(|r| &r.members[..])
    }

    /// The name of `room`, if it still exists.
    pub fn name(&self, room: RoomId) -> Option<&str> {
        self.room(room).map(|r| &*r.name)
    }

    /// The `nth` room connection `key` joined (in the order it joined them,
    /// as long as it left none).
    #[inline]
    pub fn joined(&self, key: usize, nth: usize) -> Option<RoomId> {
        let seat = self.seats.get(key)?.get(nth)?;
        Some(RoomId { index: seat.room, generation: self.rooms[seat.room as usize].generation })
    }

    /// How many rooms connection `key` is in.
    pub fn joined_count(&self, key: usize) -> usize {
        self.seats.get(key).map_or(0, Vec::len)
    }

    fn room(&self, room: RoomId) -> Option<&Room> {
        self.rooms.get(room.index as usize).filter(|r| r.generation == room.generation)
    }

    /// Makes connection `key` a member of `name`, creating the room if need be.
    pub fn join(&mut self, key: usize, name: &str) -> Result<Joined, RoomError> {
        if name.is_empty() || name.len() > MAX_ROOM_NAME {
            return Err(RoomError::BadName);
        }
        let existing = self.by_name.get(name).copied();
        if let Some(index) = existing {
            if self.seats.get(key).is_some_and(|seats| seats.iter().any(|s| s.room == index)) {
                let room = RoomId { index, generation: self.rooms[index as usize].generation };
                return Ok(Joined { room, created: false, already: true });
            }
        }
        if self.joined_count(key) >= self.max_per_connection {
            return Err(RoomError::TooManyForConnection);
        }
        let (index, created) = match existing {
            Some(index) => (index, false),
            None => {
                if self.rooms.len() >= self.max_rooms {
                    return Err(RoomError::TooManyRooms);
                }
                self.created = self.created.wrapping_add(1);
                let room = Room { name: name.into(), generation: self.created, members: Vec::new() };
                let index = self.rooms.insert(room) as u32;
                self.by_name.insert(name.into(), index);
                (index, true)
            }
        };
        let room = &mut self.rooms[index as usize];
        let position = room.members.len() as u32;
        room.members.push(key as u32);
        if self.seats.len() <= key {
            self.seats.resize_with(key + 1, Vec::new);
        }
        self.seats[key].push(Seat { room: index, position });
        self.memberships += 1;
        Ok(Joined { room: RoomId { index, generation: room.generation }, created, already: false })
    }

    /// Takes connection `key` out of `name`.
    pub fn leave(&mut self, key: usize, name: &str) -> Left {
        let Some(&index) = self.by_name.get(name) else { return Left::NotMember };
        let Some(seats) = self.seats.get_mut(key) else { return Left::NotMember };
        let Some(at) = seats.iter().position(|s| s.room == index) else { return Left::NotMember };
        let seat = seats.swap_remove(at);
        if seats.is_empty() {
            // Back to no allocation.
            *seats = Vec::new();
        }
        if self.vacate(seat) {
            Left::Freed
        } else {
            Left::Left
        }
    }

    /// Takes connection `key` out of every room it is in; calls `freed` with
    /// the name of each room that had no member left.
    pub fn leave_all(&mut self, key: usize, mut freed: impl FnMut(&str)) {
        let Some(seats) = self.seats.get_mut(key) else { return };
        for seat in std::mem::take(seats) {
            let name = self.rooms[seat.room as usize].name.clone();
            if self.vacate(seat) {
                freed(&name);
            }
        }
    }

    /// Empties one seat; frees the room if it was the last. True if freed.
    fn vacate(&mut self, seat: Seat) -> bool {
        self.memberships -= 1;
        let room = &mut self.rooms[seat.room as usize];
        room.members.swap_remove(seat.position as usize);
        if let Some(&moved) = room.members.get(seat.position as usize) {
            // The last member now sits where the leaver sat.
            if let Some(s) = self.seats[moved as usize].iter_mut().find(|s| s.room == seat.room) {
                s.position = seat.position;
            }
            return false;
        }
        if !room.members.is_empty() {
            return false;
        }
        let room = self.rooms.remove(seat.room as usize);
        self.by_name.remove(&room.name);
        true
    }
}

/// What [`Rooms::leave`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// The connection was not in that room.
    NotMember,
    /// It left; others remain.
    Left,
    /// It left and the room, now empty, is gone.
    Freed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(rooms: &Rooms, name: &str) -> Vec<u32> {
        let mut m = rooms.find(name).map_or(Vec::new(), |r| rooms.members(r).unwrap().to_vec());
        m.sort();
        m
    }

    #[test]
    fn rooms_come_and_go_with_their_members() {
        let mut rooms = Rooms::new(10, 4);
        let a = rooms.join(1, "/a").unwrap();
        assert!(a.created && !a.already);
        assert!(!rooms.join(2, "/a").unwrap().created);
        assert!(rooms.join(2, "/a").unwrap().already);
        rooms.join(3, "/b").unwrap();
        assert_eq!((rooms.len(), rooms.memberships()), (2, 3));
        assert_eq!(members(&rooms, "/a"), [1, 2]);
        assert_eq!(rooms.leave(1, "/a"), Left::Left);
        assert_eq!(rooms.leave(1, "/a"), Left::NotMember);
        assert_eq!(rooms.leave(2, "/a"), Left::Freed);
        assert_eq!(rooms.find("/a"), None);
        // A stale id does not reach a new room of the same name.
        rooms.join(4, "/a").unwrap();
        assert_eq!(rooms.members(a.room), None);
        assert_eq!(rooms.len(), 2);
    }

    #[test]
    fn leaving_from_the_middle_keeps_every_position_right() {
        let mut rooms = Rooms::new(10, 4);
        for key in 0..6 {
            rooms.join(key, "/r").unwrap();
            rooms.join(key, "/s").unwrap();
        }
        let mut freed = Vec::new();
        rooms.leave_all(2, |n| freed.push(n.to_string()));
        rooms.leave(0, "/r");
        rooms.leave_all(5, |n| freed.push(n.to_string()));
        assert_eq!(members(&rooms, "/r"), [1, 3, 4]);
        assert_eq!(members(&rooms, "/s"), [0, 1, 3, 4]);
        // Everyone still leaves cleanly: the positions were kept up to date.
        for key in 0..6 {
            rooms.leave_all(key, |n| freed.push(n.to_string()));
        }
        freed.sort();
        assert_eq!(freed, ["/r", "/s"]);
        assert_eq!((rooms.len(), rooms.memberships()), (0, 0));
    }

    #[test]
    fn limits_are_refused_clearly() {
        let mut rooms = Rooms::new(2, 2);
        rooms.join(1, "/a").unwrap();
        rooms.join(1, "/b").unwrap();
        assert_eq!(rooms.join(1, "/c"), Err(RoomError::TooManyForConnection));
        assert_eq!(rooms.join(2, "/c"), Err(RoomError::TooManyRooms));
        assert_eq!(rooms.join(2, ""), Err(RoomError::BadName));
        assert_eq!(rooms.join(2, &"x".repeat(MAX_ROOM_NAME + 1)), Err(RoomError::BadName));
        assert!(rooms.join(2, "/a").is_ok());
    }
}
